//! `serval bgp`: the speaker on its own (a small route server, or a test and benchmark
//! subject), and the commands that query a running one.

use crate::cmd::runtime;
use anyhow::{bail, Context};
use bgp::config::{Announcement, BfdConfig, PeerConfig, ReloadPlan, SpeakerConfig};
use bgp::policy::{CommunityValue, LargeCommunityValue};
use bgp::speaker::{RouteQuery, Speaker};
use bgp::status::{PeerStatus, RouteEntry};
use bgp::{Asn, RouterId};
use clap::{Parser, Subcommand};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serval::control_socket;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub const DEFAULT_SOCKET: &str = "/run/serval/bgp.sock";

#[derive(Parser)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<BgpCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum BgpCommand {
    /// Show the peers: state, uptime, prefixes received/accepted/sent, last error; and
    /// each BFD session: state, intervals in use, last diagnostic.
    Status {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Show the Loc-RIB with every path and its attributes.
    Routes {
        /// Only this prefix (exact), or with --longest the most specific route covering it.
        prefix: Option<IpNet>,
        #[arg(long)]
        longest: bool,
        #[arg(long)]
        json: bool,
        /// Only the first N destinations.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Ask a peer to send its routes again (ROUTE-REFRESH).
    Refresh {
        peer: IpAddr,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Restart a peer's session (Cease / Administrative Reset).
    Reset {
        peer: IpAddr,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Stop the speaker and withdraw its routes from every peer (no graceful restart).
    Shutdown {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Originate a prefix now (or change the attributes of one originated already).
    Announce {
        prefix: IpNet,
        /// A community ASN:VALUE or well-known name (repeatable).
        #[arg(long = "community")]
        communities: Vec<CommunityValue>,
        /// A large community GLOBAL:LOCAL1:LOCAL2 (repeatable).
        #[arg(long = "large-community")]
        large_communities: Vec<LargeCommunityValue>,
        #[arg(long)]
        med: Option<u32>,
        #[arg(long)]
        local_pref: Option<u32>,
        /// Next hop to announce instead of ourselves.
        #[arg(long)]
        next_hop: Option<IpAddr>,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Stop originating a prefix.
    Withdraw {
        prefix: IpNet,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Read the configuration file again and apply what changed: peers added, changed
    /// (only their sessions restart, and only when the session itself changed) and
    /// removed, prefixes announced and withdrawn. SIGHUP does the same.
    Reload {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
}

/// Run the speaker, from a config file or from flags alone.
#[derive(clap::Args)]
struct RunArgs {
    /// TOML configuration file (see the README for every key).
    #[arg(long, short = 'c', conflicts_with_all = ["asn", "router_id", "peer", "announce", "listen", "bfd"])]
    config: Option<PathBuf>,
    /// Local AS number.
    #[arg(long)]
    asn: Option<u32>,
    /// BGP identifier (an IPv4 address).
    #[arg(long)]
    router_id: Option<std::net::Ipv4Addr>,
    /// Address to accept sessions on (repeatable); default 0.0.0.0:179 and [::]:179.
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// A neighbour as ADDRESS:ASN (repeatable), e.g. 10.0.0.2:65002 or fd00::2:65002.
    #[arg(long, value_parser = parse_peer)]
    peer: Vec<PeerConfig>,
    /// A prefix to originate (repeatable).
    #[arg(long)]
    announce: Vec<IpNet>,
    /// BFD on every --peer (300 ms × 3): a BGP session starts only once its BFD session
    /// is Up, and goes down with it.
    #[arg(long)]
    bfd: bool,
    /// Control socket for `serval bgp status` and friends.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Where to remember a graceful stop; default beside the socket's name under
    /// /var/lib/serval/bgp.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    #[command(flatten)]
    log: crate::cmd::LogArgs,
}

fn parse_peer(s: &str) -> Result<PeerConfig, String> {
    let (addr, asn) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?}: expected ADDRESS:ASN"))?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let address: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?}: {addr:?} is not an IP address"))?;
    let asn: u32 = asn
        .parse()
        .map_err(|_| format!("{s:?}: {asn:?} is not an AS number"))?;
    Ok(PeerConfig::new(address, Asn(asn)))
}

/// Requests on the control socket.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Status,
    Routes {
        prefix: Option<IpNet>,
        longest: bool,
        limit: Option<usize>,
    },
    Refresh {
        peer: IpAddr,
    },
    Reset {
        peer: IpAddr,
    },
    Shutdown,
    Announce {
        announcement: Announcement,
    },
    Withdraw {
        prefix: IpNet,
    },
    Reload,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        None => run_speaker(args.run),
        Some(cmd) => runtime()?.block_on(query(cmd)),
    }
}

fn speaker_config(a: &RunArgs) -> anyhow::Result<SpeakerConfig> {
    let mut cfg = if let Some(path) = &a.config {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        SpeakerConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?
    } else {
        let (Some(asn), Some(id)) = (a.asn, a.router_id) else {
            bail!("give --config FILE, or at least --asn and --router-id");
        };
        let mut cfg = SpeakerConfig::new(Asn(asn), RouterId(id));
        if !a.listen.is_empty() {
            cfg.listen = a.listen.clone();
        }
        cfg.peers = a.peer.clone();
        cfg.announce = a.announce.iter().map(|p| Announcement::new(*p)).collect();
        if a.bfd {
            cfg.bfd = Some(BfdConfig::default());
        }
        cfg.validate()?;
        cfg
    };
    if cfg.state_dir.is_none() {
        let name = a
            .socket
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("bgp");
        cfg.state_dir = Some(
            a.state_dir
                .clone()
                .unwrap_or_else(|| Path::new("/var/lib/serval/bgp").join(name)),
        );
    }
    Ok(cfg)
}

fn run_speaker(a: RunArgs) -> anyhow::Result<()> {
    crate::cmd::init_logging(&a.log)?;
    let cfg = speaker_config(&a)?;
    runtime()?.block_on(async move {
        crate::cmd::spawn_heap_trim();
        let listener = control_socket::bind(&a.socket).await?;
        let graceful = cfg.graceful_restart.enabled;
        let mut start_cfg = cfg.clone();
        // Peers get their policies inline, as a reload gives them (see `reload`).
        start_cfg.peers = cfg
            .peers
            .iter()
            .map(|p| cfg.peer_with_inline_policies(p))
            .collect();
        let speaker = Speaker::start(start_cfg).await?;
        info!(socket = %a.socket.display(), "BGP speaker running");
        let stop = CancellationToken::new();
        let handler = Arc::new(Control {
            speaker: speaker.clone(),
            stop: stop.clone(),
            config_file: a.config.clone(),
            state_dir: cfg.state_dir.clone(),
            running: tokio::sync::Mutex::new(cfg),
        });
        let server = tokio::spawn(control_socket::serve::<Request, _>(
            listener,
            a.socket.clone(),
            handler.clone(),
            stop.clone(),
        ));
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let hard = loop {
            tokio::select! {
                _ = term.recv() => break false,
                _ = tokio::signal::ctrl_c() => break false,
                () = stop.cancelled() => break true,
                _ = hup.recv() => match handler.reload().await {
                    Ok(plan) => info!(?plan, "configuration reloaded"),
                    Err(e) => warn!(error = %format!("{e:#}"), "configuration not reloaded"),
                },
            }
        };
        // A signal is a stop for a restart: with graceful restart, peers keep our routes
        // until we are back. `serval bgp shutdown` withdraws them.
        info!(graceful = graceful && !hard, "stopping");
        speaker.shutdown(graceful && !hard).await?;
        stop.cancel();
        let _ = server.await;
        Ok(())
    })
}

struct Control {
    speaker: Speaker,
    stop: CancellationToken,
    /// The file to read again on reload; `None` when configured by flags.
    config_file: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    /// The configuration the speaker runs with: what a reload compares against, and
    /// what run-time announcements update.
    running: tokio::sync::Mutex<SpeakerConfig>,
}

impl Control {
    /// Read the configuration file again and apply the difference. Applied in an order
    /// that never leaves a peer without the routes it should have: new peers and
    /// announcements first, removals last.
    async fn reload(&self) -> anyhow::Result<ReloadPlan> {
        let Some(path) = &self.config_file else {
            bail!("the speaker was configured by flags: there is no file to reload");
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut new =
            SpeakerConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?;
        let mut running = self.running.lock().await;
        if new.state_dir.is_none() {
            new.state_dir = self.state_dir.clone();
        }
        let plan = running.reload_plan(&new)?;
        for p in &plan.add_peers {
            self.speaker.add_peer(p.clone()).await?;
        }
        for p in &plan.update_peers {
            self.speaker.update_peer(p.clone()).await?;
        }
        for a in &plan.announce {
            self.speaker.announce(a.clone()).await?;
        }
        for prefix in &plan.withdraw {
            self.speaker.withdraw(*prefix).await?;
        }
        for addr in &plan.remove_peers {
            self.speaker.remove_peer(*addr).await?;
        }
        *running = new;
        Ok(plan)
    }
}

impl control_socket::Handler<Request> for Control {
    async fn handle(&self, req: Request) -> anyhow::Result<serde_json::Value> {
        Ok(match req {
            Request::Status => serde_json::to_value(self.speaker.peers().await?)?,
            Request::Routes {
                prefix,
                longest,
                limit,
            } => {
                let q = RouteQuery {
                    prefix,
                    longest_match: longest,
                    family: None,
                    limit,
                };
                serde_json::to_value(self.speaker.routes(q).await?)?
            }
            Request::Refresh { peer } => {
                self.speaker.refresh(peer, None).await?;
                serde_json::Value::Null
            }
            Request::Reset { peer } => {
                self.speaker.reset(peer).await?;
                serde_json::Value::Null
            }
            Request::Shutdown => {
                self.stop.cancel();
                serde_json::Value::Null
            }
            Request::Announce { announcement } => {
                if announcement.prefix != announcement.prefix.trunc() {
                    bail!(
                        "{} has host bits set; did you mean {}?",
                        announcement.prefix,
                        announcement.prefix.trunc()
                    );
                }
                self.speaker.announce(announcement.clone()).await?;
                // Remembered as running, so a reload compares against it: the file stays
                // authoritative and withdraws a run-time prefix it does not list.
                let mut running = self.running.lock().await;
                running.announce.retain(|a| a.prefix != announcement.prefix);
                running.announce.push(announcement);
                serde_json::Value::Null
            }
            Request::Withdraw { prefix } => {
                let was = self.speaker.withdraw(prefix).await?;
                if !was {
                    bail!("{prefix} is not announced");
                }
                self.running
                    .lock()
                    .await
                    .announce
                    .retain(|a| a.prefix != prefix);
                serde_json::Value::Null
            }
            Request::Reload => serde_json::to_value(summary(&self.reload().await?))?,
        })
    }
}

/// What a reload did, for the person who asked.
fn summary(plan: &ReloadPlan) -> serde_json::Value {
    serde_json::json!({
        "added-peers": plan.add_peers.iter().map(|p| p.address).collect::<Vec<_>>(),
        "changed-peers": plan.update_peers.iter().map(|p| p.address).collect::<Vec<_>>(),
        "removed-peers": plan.remove_peers,
        "announced": plan.announce.iter().map(|a| a.prefix).collect::<Vec<_>>(),
        "withdrawn": plan.withdraw,
    })
}

/// The BFD sessions of the peers that have one; empty when none has.
fn bfd_table(peers: &[PeerStatus]) -> String {
    use std::fmt::Write;
    let ms = |v: Option<u32>| v.map_or("-".to_string(), |v| format!("{v} ms"));
    let mut out = String::new();
    for p in peers {
        let Some(b) = &p.bfd else { continue };
        if out.is_empty() {
            out.push_str("\nBFD\n");
        }
        let _ = write!(
            out,
            "  {:<24} {:<9} peer {:<9} {:<10} tx {:<8} rx {:<8} detect {:<8} (configured {}/{} ms x{}{})",
            p.address.to_string(),
            b.state,
            b.remote_state.map_or("-", |s| s.as_str()),
            if b.multihop { "multihop" } else { "single-hop" },
            ms(b.tx_interval_ms),
            ms(b.rx_interval_ms),
            ms(b.detection_time_ms),
            b.min_tx_ms,
            b.min_rx_ms,
            b.multiplier,
            if b.passive { ", passive" } else { "" },
        );
        if b.failures > 0 {
            let _ = write!(out, " failures {}", b.failures);
        }
        if let Some(h) = b.hold_down_secs {
            let _ = write!(out, " BGP held {h} s");
        }
        if let Some(d) = &b.local_diag {
            let _ = write!(out, " last: {d}");
        }
        if let Some(d) = &b.remote_diag {
            let _ = write!(out, " peer's: {d}");
        }
        out.push('\n');
    }
    out
}

async fn query(cmd: BgpCommand) -> anyhow::Result<()> {
    match cmd {
        BgpCommand::Status { json, socket } => {
            let peers: Vec<PeerStatus> = control_socket::request(&socket, &Request::Status).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&peers)?);
            } else {
                print!("{}", crate::cmd::table::peers(&peers));
                print!("{}", bfd_table(&peers));
            }
        }
        BgpCommand::Routes {
            prefix,
            longest,
            json,
            limit,
            socket,
        } => {
            let routes: Vec<RouteEntry> = control_socket::request(
                &socket,
                &Request::Routes {
                    prefix,
                    longest,
                    limit,
                },
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&routes)?);
            } else {
                print!("{}", crate::cmd::table::routes(&routes));
            }
        }
        BgpCommand::Refresh { peer, socket } => {
            control_socket::request::<_, serde_json::Value>(&socket, &Request::Refresh { peer })
                .await?;
        }
        BgpCommand::Reset { peer, socket } => {
            control_socket::request::<_, serde_json::Value>(&socket, &Request::Reset { peer })
                .await?;
        }
        BgpCommand::Shutdown { socket } => {
            control_socket::request::<_, serde_json::Value>(&socket, &Request::Shutdown).await?;
        }
        BgpCommand::Announce {
            prefix,
            communities,
            large_communities,
            med,
            local_pref,
            next_hop,
            socket,
        } => {
            let mut announcement = Announcement::new(prefix);
            announcement.communities = communities;
            announcement.large_communities = large_communities;
            announcement.med = med;
            announcement.local_pref = local_pref;
            announcement.next_hop = next_hop;
            control_socket::request::<_, serde_json::Value>(
                &socket,
                &Request::Announce { announcement },
            )
            .await?;
        }
        BgpCommand::Withdraw { prefix, socket } => {
            control_socket::request::<_, serde_json::Value>(&socket, &Request::Withdraw { prefix })
                .await?;
        }
        BgpCommand::Reload { socket } => {
            let done: serde_json::Value =
                control_socket::request(&socket, &Request::Reload).await?;
            println!("{}", serde_json::to_string_pretty(&done)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        bgp: Top,
    }
    #[derive(Subcommand)]
    enum Top {
        Bgp(Args),
    }

    fn parse(argv: &[&str]) -> Option<BgpCommand> {
        let cli = Cli::try_parse_from(["serval"].iter().chain(argv)).ok()?;
        let Top::Bgp(args) = cli.bgp;
        args.command
    }

    #[test]
    fn announce_takes_attributes() {
        let cmd = parse(&[
            "bgp",
            "announce",
            "10.1.0.0/24",
            "--community",
            "65001:7",
            "--community",
            "no-export",
            "--large-community",
            "65001:1:2",
            "--med",
            "5",
            "--socket",
            "/tmp/s",
        ]);
        let Some(BgpCommand::Announce {
            prefix,
            communities,
            large_communities,
            med,
            socket,
            ..
        }) = cmd
        else {
            panic!("not an announce command");
        };
        assert_eq!(prefix, "10.1.0.0/24".parse::<IpNet>().unwrap());
        assert_eq!(communities.len(), 2);
        assert_eq!(large_communities.len(), 1);
        assert_eq!(med, Some(5));
        assert_eq!(socket, PathBuf::from("/tmp/s"));
        assert!(parse(&["bgp", "announce", "10.1.0.0/24", "--community", "x"]).is_none());
        assert!(matches!(
            parse(&["bgp", "withdraw", "10.1.0.0/24"]),
            Some(BgpCommand::Withdraw { .. })
        ));
        assert!(matches!(
            parse(&["bgp", "reload"]),
            Some(BgpCommand::Reload { .. })
        ));
    }

    #[test]
    fn requests_round_trip_as_json() {
        let mut a = Announcement::new("10.1.0.0/24".parse().unwrap());
        a.med = Some(5);
        let text = serde_json::to_string(&Request::Announce {
            announcement: a.clone(),
        })
        .unwrap();
        match serde_json::from_str::<Request>(&text).unwrap() {
            Request::Announce { announcement } => assert_eq!(announcement, a),
            _ => panic!("{text}"),
        }
    }

    #[test]
    fn bfd_from_the_flag_and_in_the_status() {
        let cli = Cli::try_parse_from([
            "serval",
            "bgp",
            "--asn",
            "65001",
            "--router-id",
            "10.0.0.1",
            "--peer",
            "10.0.0.2:65002",
            "--bfd",
        ])
        .unwrap();
        let Top::Bgp(args) = cli.bgp;
        let cfg = speaker_config(&args.run).unwrap();
        assert_eq!(cfg.bfd_of(&cfg.peers[0]), Some(BfdConfig::default()));
        assert!(Cli::try_parse_from(["serval", "bgp", "--config", "x.toml", "--bfd"]).is_err());

        let status = |bfd| PeerStatus {
            address: "10.0.0.2".parse().unwrap(),
            name: None,
            asn: Asn(65002),
            kind: "ebgp".into(),
            state: bgp::status::SessionState::Idle,
            uptime_secs: None,
            last_error: None,
            router_id: None,
            local_address: None,
            remote_address: None,
            hold_time: None,
            keepalive: None,
            capabilities: vec![],
            families: vec![],
            messages_received: 0,
            messages_sent: 0,
            updates_received: 0,
            updates_sent: 0,
            established_count: 0,
            flaps: 0,
            idle_hold_secs: None,
            bfd,
        };
        assert_eq!(bfd_table(&[status(None)]), "");
        let b = bgp::status::BfdStatus {
            state: bgp::status::BfdState::Down,
            remote_state: Some(bgp::status::BfdState::Down),
            multihop: false,
            min_rx_ms: 100,
            min_tx_ms: 100,
            multiplier: 3,
            passive: false,
            tx_interval_ms: Some(1000),
            rx_interval_ms: Some(100),
            detection_time_ms: None,
            local_diag: Some("control detection time expired".into()),
            remote_diag: None,
            local_discriminator: Some(7),
            remote_discriminator: None,
            packets_sent: 10,
            packets_received: 9,
            failures: 2,
            hold_down_secs: Some(4),
        };
        let t = bfd_table(&[status(Some(b))]);
        for want in [
            "BFD",
            "10.0.0.2",
            "Down",
            "single-hop",
            "tx 1000 ms",
            "rx 100 ms",
            "detect -",
            "configured 100/100 ms x3",
            "failures 2",
            "BGP held 4 s",
            "last: control detection time expired",
        ] {
            assert!(t.contains(want), "{want:?} missing from {t}");
        }
    }

    #[test]
    fn peers_from_flags() {
        let p = parse_peer("10.0.0.2:65002").unwrap();
        assert_eq!(
            (p.address, p.asn),
            ("10.0.0.2".parse().unwrap(), Asn(65002))
        );
        let p = parse_peer("fd00::2:65002").unwrap();
        assert_eq!((p.address, p.asn), ("fd00::2".parse().unwrap(), Asn(65002)));
        let p = parse_peer("[fd00::2]:4200000000").unwrap();
        assert_eq!(p.asn, Asn(4_200_000_000));
        for bad in [
            "10.0.0.2",
            "10.0.0.2:x",
            "nothing:1",
            "10.0.0.2:99999999999",
        ] {
            assert!(parse_peer(bad).is_err(), "{bad}");
        }
    }
}
