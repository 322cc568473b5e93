//! Clients that connect to the agent's HTTP port (`/metrics`, `/healthz`, `/readyz`)
//! and then say nothing, or half a request.
//!
//! 1,000 such connections, opened at once from this process inside the node's
//! namespace: the agent keeps at most its connection cap (the least recently active
//! connections are closed at once), closes the rest after its header-read and idle
//! timeouts, its memory stays within a bound, and `/healthz` answers 200 throughout.

mod hostile_support;
mod node_support;

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hostile_support::{in_netns, one_node, raise_fd_limit, rss_kib};
use node_support::{http, store_with_pool};
use serval_integration::{scenario, wait_for, Error};

const FLOOD: usize = 1000;
/// The agent's defaults: at most 256 connections, a request within 5 s of its first
/// byte, 15 s of silence.
const CAP: usize = 256;
const IDLE: Duration = Duration::from_secs(15);
/// Growth of the agent's resident memory the flood may cause.
const RSS_BOUND_KIB: u64 = 16 * 1024;

/// Whether the server has closed `s` (EOF or reset); `s` is non-blocking.
fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

#[test]
fn idle_and_half_sent_connections_are_capped_and_closed() {
    scenario("hostile-http", |test| {
        let limit = raise_fd_limit(FLOOD as u64 + 1024)?;
        eprintln!("open-file limit: {limit}");
        let store = store_with_pool(test, &[])?;
        let mut n1 = one_node(test, "n1")?;
        n1.start(&store)?;
        wait_for(
            Duration::from_secs(30),
            "/healthz to answer 200",
            || http(&n1.ns, "/healthz"),
            |(c, _)| *c == 200,
        )?;
        let pid = n1
            .agent
            .as_ref()
            .ok_or_else(|| Error::InvalidSpec("no agent".into()))?
            .pid();
        // A few scrapes first, so that the baseline includes what serving costs anyway.
        for _ in 0..5 {
            http(&n1.ns, "/metrics")?;
        }
        let rss_before = rss_kib(pid)?;

        let t0 = Instant::now();
        let mut conns = in_netns(&n1.ns, || {
            let mut v = Vec::with_capacity(FLOOD);
            for i in 0..FLOOD {
                let mut s = TcpStream::connect("127.0.0.1:9099")?;
                if i % 2 == 1 {
                    // Half a request: the line and one header, never the blank line.
                    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")?;
                }
                s.set_nonblocking(true)?;
                v.push(s);
            }
            Ok(v)
        })?;
        let opened = t0.elapsed();
        eprintln!("{FLOOD} connections opened in {opened:.1?}");

        // During the flood: the probe is answered.
        for _ in 0..3 {
            let (code, body) = http(&n1.ns, "/healthz")?;
            if code != 200 {
                return Err(Error::InvalidSpec(format!(
                    "/healthz during the flood: {code} {body}"
                )));
            }
        }
        // Beyond the cap, connections are closed at once.
        let open_now = wait_for(
            Duration::from_secs(5),
            &format!("the agent to keep at most {CAP} connections"),
            || Ok(conns.iter_mut().map(closed).filter(|c| !c).count()),
            |open| *open <= CAP,
        )?;
        let rss_during = rss_kib(pid)?;
        eprintln!(
            "{open_now} of {FLOOD} still open {:.1?} after the first; agent RSS {rss_before} KiB → {rss_during} KiB",
            t0.elapsed()
        );
        if rss_during > rss_before + RSS_BOUND_KIB {
            return Err(Error::InvalidSpec(format!(
                "the flood grew the agent from {rss_before} KiB to {rss_during} KiB (bound: +{RSS_BOUND_KIB} KiB)"
            )));
        }

        // All closed once the timeouts have passed.
        let mut open: Vec<TcpStream> = conns;
        let left = wait_for(
            IDLE + Duration::from_secs(10),
            "every flooding connection to be closed",
            || {
                open.retain_mut(|s| !closed(s));
                Ok(open.len())
            },
            |n| *n == 0,
        );
        let took = t0.elapsed();
        left?;
        eprintln!("all {FLOOD} closed {took:.1?} after the first was opened");
        if took < IDLE - Duration::from_secs(1) {
            return Err(Error::InvalidSpec(format!(
                "closed after {took:?}: sooner than the idle timeout ({IDLE:?})"
            )));
        }
        let (code, body) = http(&n1.ns, "/healthz")?;
        if code != 200 {
            return Err(Error::InvalidSpec(format!(
                "/healthz after the flood: {code} {body}"
            )));
        }
        let rss_after = rss_kib(pid)?;
        eprintln!("agent RSS after: {rss_after} KiB");
        Ok(())
    });
}
