//! The feeder and the monitor as runnable sessions, reporting through [`Event`]s.
//!
//! The feeder encodes its whole feed before it connects, then writes it as fast as the
//! socket takes it, in message-aligned chunks with a KEEPALIVE between chunks when one is
//! due, and keeps the session up with KEEPALIVEs afterwards. A reader thread drains what
//! the daemon sends so that the daemon never blocks on us. The monitor counts the
//! distinct prefixes it holds and reports when it has the number it expects.

use crate::events::Event;
use crate::feed::{self, FeedSpec, Stream};
use crate::monitor::PrefixSet;
use crate::peer::{self, mono_ns, Established, PeerError};
use bgp::types::{Asn, RouterId};
use bgp::wire::{CodecParams, Message};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Octets written per `write` call: whole messages, ~64 KiB.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FeederError {
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error(transparent)]
    Feed(#[from] feed::FeedError),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// The session's identity.
#[derive(Clone, Debug)]
pub struct SessionOpts {
    pub local_as: Asn,
    pub router_id: RouterId,
    pub hold_time: u16,
}

/// What the feeder measured about itself.
#[derive(Clone, Copy, Debug)]
pub struct FeedReport {
    pub open_sent_ns: u64,
    pub established_ns: u64,
    /// From the first octet of the first UPDATE written to the last accepted by the
    /// kernel: bounded by how fast the receiver reads.
    pub write_secs: f64,
    pub bytes: usize,
    pub updates: usize,
    pub prefixes: u32,
}

impl FeedReport {
    pub fn prefixes_per_sec(&self) -> f64 {
        f64::from(self.prefixes) / self.write_secs.max(1e-9)
    }
}

/// The parameters the feed is encoded with before the session exists: what every daemon
/// negotiates with our OPEN. Re-encoded if the session turns out different.
fn expected_params() -> CodecParams {
    CodecParams {
        four_octet_asn: true,
        ebgp: true,
        ..CodecParams::default()
    }
}

/// Encodes the feed and reports how long that took.
pub fn prepare(spec: &FeedSpec) -> Result<Stream, FeederError> {
    let t = Instant::now();
    let s = feed::encode(spec, &expected_params())?;
    Event::new("encoded")
        .with("prefixes", s.prefixes)
        .with("updates", s.updates())
        .with("bytes", s.bytes.len())
        .with("secs", format!("{:.3}", t.elapsed().as_secs_f64()))
        .emit();
    Ok(s)
}

/// Drains what the peer sends until the connection ends; a NOTIFICATION or a close
/// before `done` is set is reported and ends the process with failure, so that the race
/// never mistakes a dead session for a slow one. Prefixes the daemon announces to a
/// feeder are counted and reported (`event=received`, at most five times a second): a
/// feeder is expected to get none.
fn spawn_drain(mut e: peer::FrameReader, params: CodecParams, done: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut received = 0usize;
        let mut reported = 0usize;
        // The first UPDATE is reported at once: any at all is news.
        let mut last = Instant::now()
            .checked_sub(Duration::from_secs(1))
            .unwrap_or_else(Instant::now);
        loop {
            let r = e.next_frame().and_then(|f| peer::decode(&f, &params));
            match r {
                Ok(Some(Message::Update(u))) => {
                    received += u.nlri.len() + u.mp_reach.as_ref().map_or(0, |m| m.nlri.len());
                    if received != reported && last.elapsed() >= Duration::from_millis(200) {
                        Event::new("received").with("prefixes", received).emit();
                        reported = received;
                        last = Instant::now();
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    if received != reported {
                        Event::new("received").with("prefixes", received).emit();
                    }
                    if !done.load(Ordering::Relaxed) {
                        Event::new("session-lost")
                            .with("mono_ns", mono_ns())
                            .with("reason", err)
                            .emit();
                        std::process::exit(2);
                    }
                    return;
                }
            }
        }
    });
}

/// Writes `stream` and returns once the last octet was accepted; KEEPALIVEs go between
/// chunks when due.
fn write_stream(e: &mut Established, stream: &Stream) -> Result<f64, FeederError> {
    let every = e.keepalive_interval();
    let mut next_ka = every.map(|d| Instant::now() + d);
    let ka = peer::keepalive();
    let start = Instant::now();
    for chunk in stream.chunks(CHUNK) {
        e.writer.write_all(chunk)?;
        if let (Some(at), Some(d)) = (next_ka, every) {
            if Instant::now() >= at {
                e.writer.write_all(&ka)?;
                next_ka = Some(Instant::now() + d);
            }
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Sends KEEPALIVEs until `stop` is set (or forever).
fn keepalives(mut w: std::net::TcpStream, every: Option<Duration>, stop: Option<Arc<AtomicBool>>) {
    let ka = peer::keepalive();
    let Some(every) = every else {
        return;
    };
    loop {
        let mut slept = Duration::ZERO;
        while slept < every {
            if stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                return;
            }
            let step = Duration::from_millis(100).min(every - slept);
            std::thread::sleep(step);
            slept += step;
        }
        if w.write_all(&ka).is_err() {
            return;
        }
    }
}

/// Runs the feeder over an established session: writes the feed, reports, and keeps the
/// session up while `linger` allows (`None`: until the process is killed).
pub fn feed_session(
    mut e: Established,
    spec: &FeedSpec,
    mut stream: Stream,
    linger: Option<Duration>,
) -> Result<FeedReport, FeederError> {
    let established_ns = mono_ns();
    Event::new("established")
        .with("mono_ns", established_ns)
        .with("open_sent_ns", e.open_sent_ns)
        .with("hold", e.hold_time)
        .emit();
    if e.params != expected_params() {
        stream = feed::encode(spec, &e.params)?;
    }
    let done = Arc::new(AtomicBool::new(false));
    let reader = std::mem::replace(&mut e.reader, peer::FrameReader::new(e.writer.try_clone()?));
    spawn_drain(reader, e.params.clone(), done.clone());
    let write_secs = write_stream(&mut e, &stream)?;
    let report = FeedReport {
        open_sent_ns: e.open_sent_ns,
        established_ns,
        write_secs,
        bytes: stream.bytes.len(),
        updates: stream.updates(),
        prefixes: stream.prefixes,
    };
    Event::new("stream-written")
        .with("mono_ns", mono_ns())
        .with("secs", format!("{write_secs:.4}"))
        .with("bytes", report.bytes)
        .with("updates", report.updates)
        .with("prefixes", report.prefixes)
        .with(
            "prefixes_per_sec",
            format!("{:.0}", report.prefixes_per_sec()),
        )
        .emit();
    match linger {
        None => {
            let every = e.keepalive_interval();
            keepalives(e.writer, every, None)
        }
        Some(d) => {
            std::thread::sleep(d);
            done.store(true, Ordering::Relaxed);
            let _ = e.writer.shutdown(std::net::Shutdown::Both);
        }
    }
    Ok(report)
}

/// Waits until `path` exists: the race starts every feeder at once this way, after all
/// of them have encoded their feed (which would otherwise compete with the daemon for
/// the CPU).
pub fn wait_for_file(path: &std::path::Path, timeout: Duration) -> Result<(), FeederError> {
    Event::new("ready").with("mono_ns", mono_ns()).emit();
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() >= deadline {
            return Err(FeederError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{} did not appear", path.display()),
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Where the session comes from: we connect, or we accept the daemon's connection.
#[derive(Clone, Copy, Debug)]
pub enum Endpoint {
    Connect(SocketAddr),
    Listen(SocketAddr),
}

impl Endpoint {
    fn open(self) -> Result<std::net::TcpStream, FeederError> {
        Ok(match self {
            Endpoint::Connect(t) => peer::connect(t, Duration::from_secs(60))?,
            Endpoint::Listen(l) => peer::accept(&TcpListener::bind(l)?)?,
        })
    }
}

/// The feeder: encode, wait for `go` (if given), connect (or accept), establish, feed.
pub fn feed(
    endpoint: Endpoint,
    opts: &SessionOpts,
    spec: &FeedSpec,
    go: Option<&std::path::Path>,
    linger: Option<Duration>,
) -> Result<FeedReport, FeederError> {
    let stream = prepare(spec)?;
    if let Some(go) = go {
        wait_for_file(go, Duration::from_secs(300))?;
    }
    let sock = endpoint.open()?;
    let ours = peer::open(opts.local_as, opts.hold_time, opts.router_id);
    Event::new("connected").with("mono_ns", mono_ns()).emit();
    let e = peer::handshake(sock, &ours, true)?;
    Event::new("open-sent")
        .with("mono_ns", e.open_sent_ns)
        .with("peer_as", e.remote.asn.0)
        .emit();
    feed_session(e, spec, stream, linger)
}

/// What the monitor saw.
#[derive(Clone, Copy, Debug)]
pub struct MonitorReport {
    pub established_ns: u64,
    /// When the set first held `expect` prefixes.
    pub complete_ns: u64,
    pub prefixes: usize,
    pub updates: u64,
}

/// Reads UPDATEs from an established session until `expect` distinct prefixes are held;
/// then keeps the session up for `linger` (`None`: until killed).
pub fn monitor_session(
    mut e: Established,
    expect: usize,
    linger: Option<Duration>,
) -> Result<MonitorReport, FeederError> {
    let established_ns = mono_ns();
    Event::new("established")
        .with("mono_ns", established_ns)
        .with("open_sent_ns", e.open_sent_ns)
        .with("hold", e.hold_time)
        .emit();
    let stop = Arc::new(AtomicBool::new(false));
    let w = e.writer.try_clone()?;
    let every = e.keepalive_interval();
    let ka_stop = stop.clone();
    std::thread::spawn(move || keepalives(w, every, Some(ka_stop)));
    let mut set = PrefixSet::with_capacity(expect);
    let mut updates = 0u64;
    let mut first_update_ns = None;
    let mut last_progress = Instant::now();
    while set.len() < expect {
        let f = e.reader.next_frame()?;
        if let Some(Message::Update(u)) = peer::decode(&f, &e.params)? {
            first_update_ns.get_or_insert_with(mono_ns);
            updates += 1;
            set.apply(&u);
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            Event::new("progress")
                .with("mono_ns", mono_ns())
                .with("prefixes", set.len())
                .with("updates", updates)
                .emit();
        }
    }
    let complete_ns = mono_ns();
    Event::new("complete")
        .with("mono_ns", complete_ns)
        .with("first_update_ns", first_update_ns.unwrap_or(complete_ns))
        .with("prefixes", set.len())
        .with("updates", updates)
        .emit();
    let report = MonitorReport {
        established_ns,
        complete_ns,
        prefixes: set.len(),
        updates,
    };
    // Keep reading (the daemon may send more) so that it never blocks on us.
    let until = linger.map(|d| Instant::now() + d);
    while until.is_none_or(|t| Instant::now() < t) {
        if e.reader.next_frame().is_err() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    Ok(report)
}

/// The monitor: connect (or accept), establish, count.
pub fn monitor(
    endpoint: Endpoint,
    opts: &SessionOpts,
    expect: usize,
    linger: Option<Duration>,
) -> Result<MonitorReport, FeederError> {
    let sock = endpoint.open()?;
    let ours = peer::open(opts.local_as, opts.hold_time, opts.router_id);
    let e = peer::handshake(sock, &ours, true)?;
    monitor_session(e, expect, linger)
}

/// The feeder alone against a peer that reads and discards, over loopback in this
/// process: the fastest the feeder can go on this machine, to compare with each daemon.
/// Returns the feeder's report and the seconds from its established session to the
/// sink holding every UPDATE.
pub fn selftest(spec: &FeedSpec) -> Result<(FeedReport, f64), FeederError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let updates = spec.updates() as usize;
    // The sink only frames what arrives (no decoding), so the rate is the feeder's.
    let sink = std::thread::spawn(move || -> Result<u64, FeederError> {
        let s = peer::accept(&listener)?;
        let ours = peer::open(
            Asn(64512),
            90,
            RouterId("127.0.0.2".parse().expect("literal")),
        );
        let mut e = peer::handshake(s, &ours, true)?;
        let mut seen = 0;
        while seen < updates {
            if e.reader.next_frame()?.get(18) == Some(&bgp::wire::consts::msg_type::UPDATE) {
                seen += 1;
            }
        }
        let done = mono_ns();
        // Until the feeder closes.
        while e.reader.next_frame().is_ok() {}
        Ok(done)
    });
    let opts = SessionOpts {
        local_as: spec.local_as,
        router_id: RouterId("127.0.0.1".parse().expect("literal")),
        hold_time: 90,
    };
    let report = feed(
        Endpoint::Connect(addr),
        &opts,
        spec,
        None,
        Some(Duration::from_millis(200)),
    )?;
    let delivered_ns = match sink.join() {
        Ok(r) => r?,
        Err(_) => {
            return Err(FeederError::Io(std::io::Error::other(
                "the sink thread panicked",
            )))
        }
    };
    let secs = delivered_ns.saturating_sub(report.established_ns) as f64 / 1e9;
    Ok((report, secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn selftest_delivers_every_prefix() {
        let mut spec = FeedSpec::new(
            20_000,
            Ipv4Addr::new(16, 0, 0, 0),
            Asn(65001),
            Ipv4Addr::new(127, 0, 0, 1),
        );
        spec.avoid = vec![Asn(64512)];
        let (r, delivered) = selftest(&spec).unwrap();
        assert!(delivered > 0.0);
        assert_eq!(r.prefixes, 20_000);
        assert_eq!(r.updates, 1000);
        assert!(r.write_secs > 0.0);
        assert!(r.established_ns >= r.open_sent_ns);
    }
}
