//! One peer that never stops sending UPDATEs must not starve the speaker's other work:
//! accepting connections, other peers' sessions, and the timers of graceful restart.
//!
//! Speaker A listens on 127.0.0.1; all its peers are internal and passive (they connect
//! to A, so each new session goes through A's listener):
//! - 127.0.0.2, a raw feeder written with the wire codec: once up, it announces and
//!   withdraws 32,000 prefixes, 100 to an UPDATE, without pause, to the end;
//! - 127.0.0.5–7, raw route-reflector clients that read and drop what A sends: A reflects
//!   the feeder's routes to each, which makes A's work per UPDATE larger than the
//!   decoding of the feeder's session, so that A's event queue stays full;
//! - 127.0.0.4, speaker C, up before the flood; under it, C stops gracefully (no
//!   NOTIFICATION) and never comes back: A keeps its route stale for C's restart time
//!   (a timer of A's session with C) and withdraws it then;
//! - 127.0.0.8, raw peer D with graceful restart: before the flood its connection breaks;
//!   under it, D connects again and never sends End-of-RIB: A withdraws its stale route
//!   after A's stale time (a timer of A's core);
//! - 127.0.0.3, speaker B, started under the flood: it must exchange routes with A
//!   within 5 s.
//!
//! The timers must fire within a second of their time, and A must stop within 2 s with the
//! flood still on. The test counts the feeder's UPDATEs A took in, to show that the flood
//! was on all along.

use bgp::config::{Announcement, PeerConfig, SpeakerConfig};
use bgp::speaker::{RouteQuery, Speaker};
use bgp::status::RouteEntry;
use bgp::types::{Asn, Family, RouterId};
use bgp::wire::attr::{NextHop, PathAttrs};
use bgp::wire::open::{Capability, GracefulRestartFamily};
use bgp::wire::{self, CodecParams, Message, Nlri, Open, Update};
use bytes::{Bytes, BytesMut};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const AS: Asn = Asn(64512);
const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const FEEDER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const C: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
const D: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 8);
/// A's stale time: how long A keeps a restarted peer's stale routes once it is back,
/// waiting for its End-of-RIB.
const A_STALE: Duration = Duration::from_secs(2);
/// How late a timer may fire under the flood.
const SLACK: Duration = Duration::from_secs(1);
/// Route-reflector clients of A that take whatever A sends them: the feeder's routes go
/// to each, so that A does more work per UPDATE than the feeder's session does.
const SINKS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 0, 5),
    Ipv4Addr::new(127, 0, 0, 6),
    Ipv4Addr::new(127, 0, 0, 7),
];
/// C's graceful-restart Restart Time: how long A keeps C's routes once C is gone.
const C_RESTART: Duration = Duration::from_secs(2);
/// Prefixes the feeder announces, then withdraws, round after round.
const FLOOD_PREFIXES: u32 = 32_000;
/// Prefixes per UPDATE. A session hands the core its UPDATEs in batches of at most 256
/// (and one socket read): 100 prefixes each make a batch a few tens of milliseconds of
/// work in a debug build, and still more work for A than for the feeder's session.
const PER_UPDATE: u32 = 100;

fn net(s: &str) -> IpNet {
    s.parse().expect("a prefix")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind((A, 0)).expect("bind an ephemeral port on 127.0.0.1");
    l.local_addr().expect("local address").port()
}

fn passive_peer(addr: Ipv4Addr) -> PeerConfig {
    let mut p = PeerConfig::new(IpAddr::V4(addr), AS);
    p.passive = true;
    p.families = vec![Family::Ipv4Unicast];
    p
}

/// A speaker that only connects out, from `src` to A, and originates `prefix`.
fn client(src: Ipv4Addr, port: u16, prefix: &str) -> SpeakerConfig {
    let mut c = SpeakerConfig::new(AS, RouterId(src));
    c.listen = Vec::new();
    c.graceful_restart.restart_time = C_RESTART.as_secs() as u16;
    let mut p = PeerConfig::new(IpAddr::V4(A), AS);
    p.port = port;
    p.source_address = Some(IpAddr::V4(src));
    p.families = vec![Family::Ipv4Unicast];
    c.peers.push(p);
    c.announce.push(Announcement::new(net(prefix)));
    c
}

async fn route(s: &Speaker, prefix: &str) -> Option<RouteEntry> {
    let q = RouteQuery {
        prefix: Some(net(prefix)),
        ..RouteQuery::default()
    };
    s.routes(q).await.expect("routes query").into_iter().next()
}

/// The path to `prefix` that speaker `s` learned from `from`, if any.
async fn path_from(s: &Speaker, prefix: &str, from: Ipv4Addr) -> Option<bgp::status::PathEntry> {
    route(s, prefix)
        .await?
        .paths
        .into_iter()
        .find(|p| p.peer == Some(IpAddr::V4(from)))
}

/// Polls `check` until it holds; returns when it first did, or panics with `what` at
/// the deadline.
async fn wait_until<F, Fut>(deadline: Instant, what: &str, mut check: F) -> Instant
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        if check().await {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn encode(msg: &Message, params: &CodecParams, out: &mut BytesMut) {
    wire::encode_message(msg, params, out).expect("encode a message");
}

/// The feeder's flood, encoded once: every prefix announced, then every prefix withdrawn.
fn flood(params: &CodecParams) -> (Bytes, u64) {
    let prefixes: Vec<Nlri> = (0..FLOOD_PREFIXES)
        .map(|i| {
            let [_, _, b, c] = i.to_be_bytes();
            Nlri::new(IpNet::new(IpAddr::V4(Ipv4Addr::new(20, b, c, 0)), 24).expect("a /24"))
        })
        .collect();
    let attrs = PathAttrs {
        next_hop: Some(NextHop::V4(FEEDER)),
        local_pref: Some(100),
        ..PathAttrs::default()
    };
    let mut out = BytesMut::new();
    let mut updates = 0;
    for chunk in prefixes.chunks(PER_UPDATE as usize) {
        let u = Update {
            attrs: Some(attrs.clone()),
            nlri: chunk.to_vec(),
            ..Update::default()
        };
        encode(&Message::Update(u), params, &mut out);
        updates += 1;
    }
    for chunk in prefixes.chunks(PER_UPDATE as usize) {
        let u = Update {
            withdrawn: chunk.to_vec(),
            ..Update::default()
        };
        encode(&Message::Update(u), params, &mut out);
        updates += 1;
    }
    (out.freeze(), updates)
}

/// Reads whole messages until one of type `kind` has come (its rest is left unread).
async fn read_until(s: &mut TcpStream, kind: u8) {
    let mut buf = BytesMut::new();
    loop {
        while buf.len() >= 19 {
            let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
            if buf[18] == kind {
                return;
            }
            if buf.len() < len {
                break;
            }
            let _ = buf.split_to(len);
        }
        let n = s.read_buf(&mut buf).await.expect("read from A");
        assert!(
            n > 0,
            "A closed the connection before a message of type {kind}"
        );
    }
}

struct Feeder {
    /// UPDATEs written to A's socket (the socket only takes what A reads).
    written: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// A raw session from `src` to A, up to the KEEPALIVE that establishes it.
async fn handshake(src: Ipv4Addr, port: u16) -> TcpStream {
    handshake_with(src, port, None).await
}

/// D's graceful-restart capability: its routes are to be kept across a restart, and
/// after one (`restarted`) it preserved its forwarding state.
fn gr(restarted: bool) -> Capability {
    Capability::GracefulRestart {
        restart_state: restarted,
        notification: false,
        restart_time: 60,
        families: vec![GracefulRestartFamily {
            afi_safi: Family::Ipv4Unicast.afi_safi(),
            forwarding_preserved: restarted,
        }],
    }
}

async fn handshake_with(src: Ipv4Addr, port: u16, extra: Option<Capability>) -> TcpStream {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::new(IpAddr::V4(src), 0))
        .unwrap_or_else(|e| panic!("bind {src}: {e}"));
    let mut s = sock
        .connect(SocketAddr::new(IpAddr::V4(A), port))
        .await
        .unwrap_or_else(|e| panic!("{src} connects to A: {e}"));
    let open = Open::new(
        AS,
        90,
        RouterId(src),
        [
            Capability::Multiprotocol(Family::Ipv4Unicast.afi_safi()),
            Capability::FourOctetAsn(AS),
        ]
        .into_iter()
        .chain(extra)
        .collect(),
    );
    let mut out = BytesMut::new();
    encode(&Message::Open(open), &CodecParams::default(), &mut out);
    s.write_all(&out).await.expect("send OPEN");
    read_until(&mut s, 1).await;
    out.clear();
    encode(&Message::Keepalive, &CodecParams::default(), &mut out);
    s.write_all(&out).await.expect("send KEEPALIVE");
    s
}

/// A peer that takes whatever A sends it and discards it.
fn start_sink(mut s: TcpStream) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut sink = vec![0u8; 256 * 1024];
        while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
    })
}

/// Connects to A as 127.0.0.2, brings the session up, then floods until stopped.
async fn start_feeder(port: u16) -> Feeder {
    let s = handshake(FEEDER, port).await;
    let (flood, per_round) = flood(&params());
    let (mut rd, mut wr) = s.into_split();
    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let task = {
        let (written, stop) = (written.clone(), stop.clone());
        tokio::spawn(async move {
            // Whatever A sends (its KEEPALIVEs) is read and dropped.
            let drain = tokio::spawn(async move {
                let mut sink = vec![0u8; 64 * 1024];
                while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
            });
            while !stop.load(Ordering::Relaxed) {
                if wr.write_all(&flood).await.is_err() {
                    break;
                }
                written.fetch_add(per_round, Ordering::Relaxed);
            }
            drain.abort();
        })
    };
    Feeder {
        written,
        stop,
        task,
    }
}

/// Four-octet-AS parameters for the UPDATEs the raw peers send.
fn params() -> CodecParams {
    CodecParams {
        four_octet_asn: true,
        ..CodecParams::default()
    }
}

/// D announces 10.8.0.0/24.
async fn announce_d(s: &mut TcpStream) {
    let u = Update {
        attrs: Some(PathAttrs {
            next_hop: Some(NextHop::V4(D)),
            local_pref: Some(100),
            ..PathAttrs::default()
        }),
        nlri: vec![Nlri::new(net("10.8.0.0/24"))],
        ..Update::default()
    };
    let mut out = BytesMut::new();
    encode(&Message::Update(u), &params(), &mut out);
    s.write_all(&out).await.expect("D sends its UPDATE");
}

/// UPDATEs A's session with the feeder has taken in (the core has all but the few
/// batches waiting for it).
async fn feeder_updates(a: &Speaker) -> u64 {
    a.peers()
        .await
        .expect("peers")
        .into_iter()
        .find(|p| p.address == IpAddr::V4(FEEDER))
        .map_or(0, |p| p.updates_received)
}

/// Watches one route of A's that is to go on a timer: kept stale, then gone between
/// `from + after` and `from + after + SLACK`.
struct StaleTimer {
    what: &'static str,
    prefix: &'static str,
    peer: Ipv4Addr,
    after: Duration,
    stale_seen: bool,
    gone: Option<Duration>,
}

impl StaleTimer {
    fn new(what: &'static str, prefix: &'static str, peer: Ipv4Addr, after: Duration) -> Self {
        StaleTimer {
            what,
            prefix,
            peer,
            after,
            stale_seen: false,
            gone: None,
        }
    }

    /// Looks once; `from`: when the timer started (`None`: not started yet).
    async fn check(&mut self, a: &Speaker, from: Option<Instant>) -> Result<(), String> {
        if self.gone.is_some() {
            return Ok(());
        }
        let asked = Instant::now();
        let path = path_from(a, self.prefix, self.peer).await;
        let answered = Instant::now();
        if let Some(p) = &path {
            self.stale_seen |= p.stale;
        }
        let Some(from) = from else {
            return Ok(());
        };
        match path {
            // There when asked: at least this late.
            Some(_) if asked.saturating_duration_since(from) >= self.after + SLACK => Err(format!(
                "{}: the stale route was still there {:?} after the timer of {:?} started",
                self.what,
                asked - from,
                self.after
            )),
            Some(_) => Ok(()),
            None if !self.stale_seen => Err(format!(
                "{}: the route went without being kept stale first",
                self.what
            )),
            // Gone when answered: at most this early.
            None if answered - from + Duration::from_millis(100) < self.after => Err(format!(
                "{}: the stale route went {:?} after the timer started, before its {:?}",
                self.what,
                answered - from,
                self.after
            )),
            None => {
                self.gone = Some(answered - from);
                Ok(())
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_does_not_starve_accepts_other_peers_or_timers() {
    let port = free_port();
    let mut cfg = SpeakerConfig::new(AS, RouterId(A));
    cfg.listen = vec![SocketAddr::new(IpAddr::V4(A), port)];
    cfg.graceful_restart.stale_time = A_STALE.as_secs() as u32;
    cfg.peers = [FEEDER, B, C, D].into_iter().map(passive_peer).collect();
    for s in SINKS {
        let mut sink = passive_peer(s);
        sink.route_reflector_client = true;
        cfg.peers.push(sink);
    }
    cfg.announce.push(Announcement::new(net("10.1.0.0/24")));
    let a = Speaker::start(cfg).await.expect("start speaker A");
    let setup = Instant::now() + Duration::from_secs(20);

    // Before the flood: C comes up; D comes up, announces, and its connection breaks
    // (a restart, RFC 4724): A keeps D's route stale.
    let c = Speaker::start(client(C, port, "10.4.0.0/24"))
        .await
        .expect("start speaker C");
    wait_until(setup, "A did not learn C's 10.4.0.0/24", || async {
        path_from(&a, "10.4.0.0/24", C).await.is_some()
    })
    .await;
    let mut d = handshake_with(D, port, Some(gr(false))).await;
    let d_first_up = Instant::now();
    announce_d(&mut d).await;
    wait_until(setup, "A did not learn D's 10.8.0.0/24", || async {
        path_from(&a, "10.8.0.0/24", D).await.is_some()
    })
    .await;
    drop(d);
    wait_until(
        setup,
        "A did not keep D's route stale when D went",
        || async {
            path_from(&a, "10.8.0.0/24", D)
                .await
                .is_some_and(|p| p.stale)
        },
    )
    .await;
    // D's first session had nothing stale: no stale timer of that session may take
    // the routes D keeps through its restart.
    tokio::time::sleep_until((d_first_up + A_STALE + Duration::from_millis(300)).into()).await;
    assert!(
        path_from(&a, "10.8.0.0/24", D).await.is_some(),
        "D's stale route went the stale time after D's first session came up, while D was \
         restarting"
    );
    let mut sinks = Vec::new();
    for s in SINKS {
        sinks.push(start_sink(handshake(s, port).await));
    }

    // The flood starts, and A is shown to be busy with it.
    let feeder = start_feeder(port).await;
    let busy_from = Instant::now();
    let before = feeder_updates(&a).await;
    wait_until(setup, "A is not taking in the feeder's UPDATEs", || async {
        feeder_updates(&a).await > before + 2000
    })
    .await;

    // Under the flood: C goes for good (its routes are to go after its restart time, a
    // session's timer); D comes back without an End-of-RIB (its routes are to go after
    // A's stale time, a timer of A's core); B connects.
    let c_gone = Instant::now();
    c.shutdown(true).await.expect("stop C gracefully");
    let d_back: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let d_task = {
        let d_back = d_back.clone();
        tokio::spawn(async move {
            let mut d = handshake_with(D, port, Some(gr(true))).await;
            // A sends its routes to D in the turn it takes D's session up, when it
            // starts the stale timer.
            read_until(&mut d, 2).await;
            *d_back.lock().expect("lock") = Some(Instant::now());
            start_sink(d).await.ok();
        })
    };
    let b = Speaker::start(client(B, port, "10.3.0.0/24"))
        .await
        .expect("start speaker B");
    let b_started = Instant::now();

    let mut c_watch = StaleTimer::new("C left for good", "10.4.0.0/24", C, C_RESTART);
    let mut d_watch = StaleTimer::new("D came back without End-of-RIB", "10.8.0.0/24", D, A_STALE);
    let mut b_done = None;
    let taken = || async {
        format!(
            "{} UPDATEs taken in since the flood began",
            feeder_updates(&a).await - before
        )
    };
    while b_done.is_none() || c_watch.gone.is_none() || d_watch.gone.is_none() {
        let mut failed = Vec::new();
        if b_done.is_none() {
            if path_from(&a, "10.3.0.0/24", B).await.is_some()
                && path_from(&b, "10.1.0.0/24", A).await.is_some()
            {
                b_done = Some(b_started.elapsed());
            } else if b_started.elapsed() > Duration::from_secs(5) {
                failed.push("B did not exchange routes with A within 5 s of starting".into());
            }
        }
        let back = *d_back.lock().expect("lock");
        if back.is_none() && c_gone.elapsed() > Duration::from_secs(5) {
            failed.push("D's new connection was not taken up within 5 s".into());
        }
        failed.extend(c_watch.check(&a, Some(c_gone)).await.err());
        failed.extend(d_watch.check(&a, back).await.err());
        if !failed.is_empty() {
            panic!("{} ({})", failed.join("; "), taken().await);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The feeder kept A busy the whole time.
    let taken = feeder_updates(&a).await - before;
    let elapsed = busy_from.elapsed();
    assert!(!feeder.task.is_finished(), "the feeder stopped early");
    eprintln!(
        "B exchanged routes {b_done:?} after starting; C's stale route went {:?} after it \
         left (restart time {C_RESTART:?}); D's {:?} after it came back (stale time \
         {A_STALE:?}); A took in {taken} UPDATEs ({:.0}/s, {PER_UPDATE} prefixes each) from \
         the feeder in {elapsed:?}; the feeder wrote {}",
        c_watch.gone,
        d_watch.gone,
        taken as f64 / elapsed.as_secs_f64(),
        feeder.written.load(Ordering::Relaxed)
    );
    // A kept taking UPDATEs in, and never caught up: what the feeder wrote and A had not
    // read yet filled the sockets' buffers.
    let written = feeder.written.load(Ordering::Relaxed);
    assert!(
        taken as f64 / elapsed.as_secs_f64() > 500.0 && written > taken + 2_000,
        "the feeder did not keep A busy: A took in {taken} UPDATEs in {elapsed:?}, the feeder \
         wrote {written}"
    );

    // A stops promptly with the flood still on (its sessions do not wait for a core that
    // no longer reads their events).
    let _ = b.shutdown(false).await;
    let stopping = Instant::now();
    a.shutdown(false).await.expect("stop A");
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "A took {:?} to stop under the flood",
        stopping.elapsed()
    );
    feeder.stop.store(true, Ordering::Relaxed);
    feeder.task.abort();
    d_task.abort();
    for s in sinks {
        s.abort();
    }
}
