//! `bgp-feeder`: the benchmark's BGP peers.
//!
//! ```text
//! bgp-feeder feed --connect 192.0.2.1:179 --local-as 65001 --router-id 192.0.2.10 \
//!     --next-hop 192.0.2.10 --prefixes 1000000 --base 16.0.0.0 --avoid-as 64512
//! bgp-feeder monitor --connect 192.0.2.1:179 --local-as 65100 --router-id 192.0.2.20 \
//!     --expect 1000000
//! bgp-feeder selftest --prefixes 1000000
//! ```
//!
//! Every report is an `event=NAME key=value…` line on stdout (see `serval_benches::events`).

use anyhow::Context;
use bgp::types::{Asn, RouterId};
use clap::{Parser, Subcommand};
use serval_benches::events::Event;
use serval_benches::feed::FeedSpec;
use serval_benches::feeder::{self, Endpoint, SessionOpts};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

#[derive(Parser)]
#[command(about = "BGP feeder and monitor for benchmarking BGP daemons")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct Session {
    #[arg(long)]
    local_as: u32,
    #[arg(long)]
    router_id: Ipv4Addr,
    #[arg(long, default_value_t = 90)]
    hold_time: u16,
}

impl Session {
    fn opts(&self) -> SessionOpts {
        SessionOpts {
            local_as: Asn(self.local_as),
            router_id: RouterId(self.router_id),
            hold_time: self.hold_time,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Connect (or accept), establish, write the feed as fast as the socket takes it,
    /// stay up.
    Feed {
        #[arg(long, required_unless_present = "listen")]
        connect: Option<SocketAddr>,
        #[arg(long)]
        listen: Option<SocketAddr>,
        #[command(flatten)]
        session: Session,
        /// NEXT_HOP of every route (the feeder's own address).
        #[arg(long)]
        next_hop: Ipv4Addr,
        #[arg(long, default_value_t = 1_000_000)]
        prefixes: u32,
        #[arg(long, default_value_t = 20)]
        per_update: u32,
        /// Address of the first prefix (/21 aligned); feeds with different bases given
        /// enough room (prefixes × 256 addresses) never overlap.
        #[arg(long, default_value = "16.0.0.0")]
        base: Ipv4Addr,
        /// An AS never to put in a path (the target's); repeatable.
        #[arg(long)]
        avoid_as: Vec<u32>,
        /// Stop this many seconds after the feed is written (default: stay up).
        #[arg(long)]
        linger: Option<u64>,
        /// After encoding, wait until this file exists before connecting.
        #[arg(long)]
        go_file: Option<std::path::PathBuf>,
    },
    /// Connect (or accept), establish, count the distinct prefixes received.
    Monitor {
        #[arg(long, required_unless_present = "listen")]
        connect: Option<SocketAddr>,
        #[arg(long)]
        listen: Option<SocketAddr>,
        #[command(flatten)]
        session: Session,
        /// Report `event=complete` once this many prefixes are held.
        #[arg(long)]
        expect: usize,
        /// Stop this many seconds after complete (default: stay up).
        #[arg(long)]
        linger: Option<u64>,
    },
    /// The feeder into a discarding peer over loopback: its own top speed.
    Selftest {
        #[arg(long, default_value_t = 1_000_000)]
        prefixes: u32,
    },
}

fn endpoint(connect: Option<SocketAddr>, listen: Option<SocketAddr>) -> Endpoint {
    match (connect, listen) {
        (Some(c), _) => Endpoint::Connect(c),
        // clap requires one of the two.
        (None, l) => Endpoint::Listen(l.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 179)))),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Feed {
            connect,
            listen,
            session,
            next_hop,
            prefixes,
            per_update,
            base,
            avoid_as,
            linger,
            go_file,
        } => {
            let mut spec = FeedSpec::new(prefixes, base, Asn(session.local_as), next_hop);
            spec.per_update = per_update;
            spec.avoid = avoid_as.into_iter().map(Asn).collect();
            feeder::feed(
                endpoint(connect, listen),
                &session.opts(),
                &spec,
                go_file.as_deref(),
                linger.map(Duration::from_secs),
            )
            .map(drop)
        }
        Cmd::Monitor {
            connect,
            listen,
            session,
            expect,
            linger,
        } => feeder::monitor(
            endpoint(connect, listen),
            &session.opts(),
            expect,
            linger.map(Duration::from_secs),
        )
        .map(drop),
        Cmd::Selftest { prefixes } => {
            let mut spec = FeedSpec::new(
                prefixes,
                Ipv4Addr::new(16, 0, 0, 0),
                Asn(65001),
                Ipv4Addr::new(127, 0, 0, 1),
            );
            spec.avoid = vec![Asn(64512)];
            feeder::selftest(&spec).map(|(r, delivered)| {
                Event::new("selftest")
                    .with("prefixes", r.prefixes)
                    .with("write_secs", format!("{:.4}", r.write_secs))
                    .with("delivered_secs", format!("{delivered:.4}"))
                    .with(
                        "prefixes_per_sec",
                        format!("{:.0}", f64::from(r.prefixes) / delivered.max(1e-9)),
                    )
                    .emit();
            })
        }
    };
    if let Err(e) = &result {
        Event::new("error").with("message", e).emit();
    }
    result.context("bgp-feeder")
}
