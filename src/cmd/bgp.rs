//! `serval bgp`: the speaker on its own (a small route server, or a test and benchmark
//! subject), and the commands that query a running one.

use crate::cmd::runtime;
use anyhow::{bail, Context};
use bgp::config::{Announcement, PeerConfig, SpeakerConfig};
use bgp::speaker::{RouteQuery, Speaker};
use bgp::status::{PeerStatus, RouteEntry};
use bgp::{Asn, RouterId};
use clap::{Parser, Subcommand};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serval::control;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::info;

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
    /// Show the peers: state, uptime, prefixes received/accepted/sent, last error.
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
}

/// Run the speaker, from a config file or from flags alone.
#[derive(clap::Args)]
struct RunArgs {
    /// TOML configuration file (see the README for every key).
    #[arg(long, short = 'c', conflicts_with_all = ["asn", "router_id", "peer", "announce", "listen"])]
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
        let listener = control::bind(&a.socket).await?;
        let graceful = cfg.graceful_restart.enabled;
        let speaker = Speaker::start(cfg).await?;
        info!(socket = %a.socket.display(), "BGP speaker running");
        let stop = CancellationToken::new();
        let handler = Arc::new(Control {
            speaker: speaker.clone(),
            stop: stop.clone(),
        });
        let server = tokio::spawn(control::serve::<Request, _>(
            listener,
            a.socket.clone(),
            handler,
            stop.clone(),
        ));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let hard = tokio::select! {
            _ = term.recv() => false,
            _ = tokio::signal::ctrl_c() => false,
            () = stop.cancelled() => true,
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
}

impl control::Handler<Request> for Control {
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
        })
    }
}

async fn query(cmd: BgpCommand) -> anyhow::Result<()> {
    match cmd {
        BgpCommand::Status { json, socket } => {
            let peers: Vec<PeerStatus> = control::request(&socket, &Request::Status).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&peers)?);
            } else {
                print!("{}", crate::cmd::table::peers(&peers));
            }
        }
        BgpCommand::Routes {
            prefix,
            longest,
            json,
            limit,
            socket,
        } => {
            let routes: Vec<RouteEntry> = control::request(
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
            control::request::<_, serde_json::Value>(&socket, &Request::Refresh { peer }).await?;
        }
        BgpCommand::Reset { peer, socket } => {
            control::request::<_, serde_json::Value>(&socket, &Request::Reset { peer }).await?;
        }
        BgpCommand::Shutdown { socket } => {
            control::request::<_, serde_json::Value>(&socket, &Request::Shutdown).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
