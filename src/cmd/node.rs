//! `serval node`: run the node agent, or ask a running one for its status.
//!
//! Every `run` setting is a flag, an environment variable or a key of the `--config`
//! TOML file (same name without the dashes' prefix, e.g. `as-number`), in that order of
//! precedence; see `serval::node::config`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use bgp::speaker::RouteQuery;
use clap::{Parser, Subcommand};
use serval::control_socket;
use serval::node::config::{self, FileConfig, DEFAULT_SOCKET};
use serval::node::requests::{NodeControl, NodeRequest};
use serval::node::status::NodeStatus;
use serval::node::{http, Shared};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cmd::bgp::Request as BgpRequest;
use crate::cmd::table::{duration, render};
use crate::cmd::{init_logging, runtime, LogArgs, LogFormat};

#[derive(Parser)]
pub struct Args {
    #[command(subcommand)]
    command: NodeCommand,
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Run the node agent: BGP speaker, routes, tunnels, NAT, status and metrics.
    Run(Box<RunArgs>),
    /// Show the running agent's status: peers, routes, tunnels, last reconcile.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// List every programmed route.
        #[arg(long)]
        routes: bool,
        /// The agent's control socket.
        #[arg(long, default_value = DEFAULT_SOCKET, env = "SERVAL_NODE_SOCKET")]
        socket: PathBuf,
    },
}

/// `serval node run`; flags win over the environment, which wins over `--config`.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// TOML file with the same keys as the flags (`node-name`, `as-number`, …).
    #[arg(long, env = "SERVAL_CONFIG")]
    config: Option<PathBuf>,
    /// This node's name [default: the hostname].
    #[arg(long = "node", env = "SERVAL_NODE")]
    node: Option<String>,
    /// file:PATH, etcd:ENDPOINTS or kubernetes [default: file:/var/lib/serval/ipam.json].
    #[arg(long, env = "SERVAL_DATASTORE")]
    datastore: Option<String>,
    /// This node's AS [default: BGPConfiguration's asNumber, else 64512].
    #[arg(long, env = "SERVAL_AS_NUMBER")]
    as_number: Option<u32>,
    /// BGP identifier [default: the node's IPv4 address].
    #[arg(long, env = "SERVAL_ROUTER_ID")]
    router_id: Option<String>,
    /// `autodetect`, `none` or ADDRESS/PREFIXLEN [default: autodetect].
    #[arg(long, env = "SERVAL_IP")]
    ip: Option<String>,
    /// first-found, can-reach=ADDR, interface=REGEX, skip-interface=REGEX or cidr=CIDR[,CIDR].
    #[arg(long, env = "SERVAL_IP_AUTODETECTION_METHOD")]
    ip_autodetection_method: Option<String>,
    /// `autodetect`, `none` or ADDRESS/PREFIXLEN for IPv6 [default: none].
    #[arg(long, env = "SERVAL_IP6")]
    ip6: Option<String>,
    /// The IPv6 autodetection method.
    #[arg(long, env = "SERVAL_IP6_AUTODETECTION_METHOD")]
    ip6_autodetection_method: Option<String>,
    /// A label KEY=VALUE written into this node's ServalNode (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Where the speaker remembers a graceful stop [default: /var/lib/serval/<node>].
    #[arg(long, env = "SERVAL_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The node control socket [default: /run/serval/node.sock].
    #[arg(long, env = "SERVAL_NODE_SOCKET")]
    socket: Option<PathBuf>,
    /// The speaker's control socket, for `serval bgp status --socket` [default: /run/serval/bgp.sock].
    #[arg(long, env = "SERVAL_BGP_SOCKET")]
    bgp_socket: Option<PathBuf>,
    /// ADDRESS:PORT of /healthz, /readyz and /metrics, or `none` [default: 127.0.0.1:9099].
    #[arg(long, env = "SERVAL_METRICS_ADDR")]
    metrics_addr: Option<String>,
    /// Written when the node is ready [default: /run/serval/ready].
    #[arg(long, env = "SERVAL_READY_FILE")]
    ready_file: Option<PathBuf>,
    /// The pod MTU for the CNI plugin [default: /var/lib/serval/mtu].
    #[arg(long, env = "SERVAL_MTU_FILE")]
    mtu_file: Option<PathBuf>,
    /// The node name for the CNI plugin [default: /var/lib/serval/nodename].
    #[arg(long, env = "SERVAL_NODENAME_FILE")]
    nodename_file: Option<PathBuf>,
    /// Seconds a restarted agent keeps its previous routes while BGP converges [default: 30].
    #[arg(long, env = "SERVAL_INITIAL_SYNC_TIMEOUT")]
    initial_sync_timeout: Option<u64>,
    /// `text` or `json` [default: text].
    #[arg(long, env = "SERVAL_LOG_FORMAT")]
    log_format: Option<String>,
    /// Log filter, e.g. `info` or `serval=debug,info` [default: info].
    #[arg(long, env = "SERVAL_LOG")]
    log_level: Option<String>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))
}

impl RunArgs {
    fn flags(&self) -> FileConfig {
        FileConfig {
            node_name: self.node.clone(),
            datastore: self.datastore.clone(),
            as_number: self.as_number,
            router_id: self.router_id.clone(),
            ip: self.ip.clone(),
            ip_autodetection_method: self.ip_autodetection_method.clone(),
            ip6: self.ip6.clone(),
            ip6_autodetection_method: self.ip6_autodetection_method.clone(),
            labels: self.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
            socket: self.socket.clone(),
            bgp_socket: self.bgp_socket.clone(),
            metrics_addr: self.metrics_addr.clone(),
            state_dir: self.state_dir.clone(),
            ready_file: self.ready_file.clone(),
            mtu_file: self.mtu_file.clone(),
            nodename_file: self.nodename_file.clone(),
            initial_sync_timeout_secs: self.initial_sync_timeout,
            log_format: self.log_format.clone(),
            log_level: self.log_level.clone(),
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        NodeCommand::Run(a) => run_agent(*a),
        NodeCommand::Status {
            json,
            routes,
            socket,
        } => runtime()?.block_on(status(json, routes, socket)),
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
}

fn run_agent(a: RunArgs) -> anyhow::Result<()> {
    let file = match &a.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("config: reading {}", path.display()))?;
            config::parse_file(&text)
                .map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let cfg = match config::build(a.flags(), file, hostname()) {
        Ok(c) => c,
        Err(errors) => bail!("invalid configuration:\n  {}", errors.join("\n  ")),
    };
    init_logging(&LogArgs {
        log_format: if cfg.log_format == "json" {
            LogFormat::Json
        } else {
            LogFormat::Text
        },
        log_level: cfg.log_level.clone(),
    })?;
    runtime()?.block_on(async move {
        crate::cmd::spawn_heap_trim();
        let shared = Shared::new();
        // Sockets first: a second agent with the same sockets stops here, before it
        // changes anything.
        let node_listener = control_socket::bind(&cfg.socket).await.context("socket")?;
        let bgp_listener = control_socket::bind(&cfg.bgp_socket)
            .await
            .context("bgp-socket")?;
        let http_listener = match cfg.metrics_addr {
            Some(addr) => Some(http::bind(addr).await?),
            None => None,
        };
        let stop = CancellationToken::new();
        let servers = vec![
            tokio::spawn(control_socket::serve::<NodeRequest, _>(
                node_listener,
                cfg.socket.clone(),
                Arc::new(NodeControl {
                    shared: shared.clone(),
                }),
                stop.clone(),
            )),
            tokio::spawn(control_socket::serve::<BgpRequest, _>(
                bgp_listener,
                cfg.bgp_socket.clone(),
                Arc::new(BgpControl {
                    shared: shared.clone(),
                }),
                stop.clone(),
            )),
        ];
        let http_task =
            http_listener.map(|l| tokio::spawn(http::serve(l, shared.clone(), stop.clone())));
        let signals = {
            let stop = stop.clone();
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => info!("SIGTERM"),
                    _ = tokio::signal::ctrl_c() => info!("SIGINT"),
                    () = stop.cancelled() => {}
                }
                stop.cancel();
            })
        };
        let result = serval::node::run(cfg, shared, stop.clone()).await;
        stop.cancel();
        for s in servers {
            let _ = s.await;
        }
        if let Some(h) = http_task {
            let _ = h.await;
        }
        let _ = signals.await;
        result
    })
}

/// The speaker's own control socket, as `serval bgp` speaks it.
struct BgpControl {
    shared: Arc<Shared>,
}

impl control_socket::Handler<BgpRequest> for BgpControl {
    async fn handle(&self, req: BgpRequest) -> anyhow::Result<serde_json::Value> {
        let Some(speaker) = self.shared.speaker() else {
            bail!("the BGP speaker is not running");
        };
        Ok(match req {
            BgpRequest::Status => serde_json::to_value(speaker.peers().await?)?,
            BgpRequest::Routes {
                prefix,
                longest,
                limit,
            } => serde_json::to_value(
                speaker
                    .routes(RouteQuery {
                        prefix,
                        longest_match: longest,
                        family: None,
                        limit,
                    })
                    .await?,
            )?,
            BgpRequest::Refresh { peer } => {
                speaker.refresh(peer, None).await?;
                serde_json::Value::Null
            }
            BgpRequest::Reset { peer } => {
                speaker.reset(peer).await?;
                serde_json::Value::Null
            }
            BgpRequest::Shutdown => {
                bail!("the node agent's speaker stops with the agent: send the agent SIGTERM")
            }
            BgpRequest::Announce { .. } | BgpRequest::Withdraw { .. } => bail!(
                "the node agent announces what the datastore says (its blocks, BGPConfiguration \
                 prefixAdvertisements): change those instead"
            ),
            BgpRequest::Reload => {
                bail!("the node agent follows the datastore by itself: there is no file to reload")
            }
        })
    }
}

async fn status(json: bool, routes: bool, socket: PathBuf) -> anyhow::Result<()> {
    let s: NodeStatus = control_socket::request(&socket, &NodeRequest::Status { routes }).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", text(&s, routes));
    }
    Ok(())
}

/// The status for people, in the spirit of `calicoctl node status`.
fn text(s: &NodeStatus, with_routes: bool) -> String {
    let mut out = String::new();
    let ready = if s.ready { "ready" } else { "NOT READY" };
    out.push_str(&format!("serval node {} is running: {ready}\n", s.node));
    let addrs: Vec<String> = s
        .ipv4_address
        .iter()
        .chain(s.ipv6_address.iter())
        .map(ToString::to_string)
        .collect();
    out.push_str(&format!(
        "  address {}, AS {}, router id {}{}\n",
        addrs.join(" "),
        s.asn,
        s.router_id.map(|r| r.to_string()).unwrap_or_default(),
        s.cluster_id
            .map(|c| format!(", route reflector cluster {c}"))
            .unwrap_or_default()
    ));
    out.push_str(&format!(
        "  datastore {} ({}), BGP initial sync {}, pod MTU {}\n",
        s.datastore,
        if s.datastore_ok { "ok" } else { "unreachable" },
        if s.bgp_initial_sync_done {
            "done"
        } else {
            "in progress"
        },
        s.mtu.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
    ));
    out.push_str("\nBGP peers\n");
    let rows: Vec<Vec<String>> = s
        .peers
        .iter()
        .map(|p| {
            vec![
                p.address.to_string(),
                p.name.clone().unwrap_or_default(),
                serde_json::to_value(p.peer_type)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                p.state.to_string(),
                p.uptime_secs.map(duration).unwrap_or_default(),
                format!("{}/{}", p.prefixes_received, p.prefixes_sent),
                p.bfd
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |b| b.summary()),
                p.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&render(
        &[
            "PEER ADDRESS",
            "NAME",
            "TYPE",
            "STATE",
            "SINCE",
            "RECV/SENT",
            "BFD",
            "LAST ERROR",
        ],
        &rows,
    ));
    out.push_str(&format!("\nRoutes programmed: {}\n", s.routes_programmed));
    if with_routes {
        let rows: Vec<Vec<String>> = s
            .routes
            .iter()
            .map(|r| {
                vec![
                    r.prefix.to_string(),
                    r.kind.clone(),
                    r.via.clone().unwrap_or_default(),
                    r.device.clone().unwrap_or_default(),
                    r.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&render(
            &["PREFIX", "KIND", "VIA", "DEVICE", "ERROR"],
            &rows,
        ));
    }
    if !s.tunnels.is_empty() {
        out.push_str("\nTunnels\n");
        let rows: Vec<Vec<String>> = s
            .tunnels
            .iter()
            .map(|t| {
                vec![
                    t.device.clone(),
                    t.address.map(|a| a.to_string()).unwrap_or_default(),
                    t.mtu.map(|m| m.to_string()).unwrap_or_default(),
                    t.pools.clone(),
                    t.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&render(
            &["DEVICE", "ADDRESS", "MTU", "POOLS", "ERROR"],
            &rows,
        ));
    }
    if !s.nat_pools.is_empty() {
        let n: Vec<String> = s.nat_pools.iter().map(ToString::to_string).collect();
        out.push_str(&format!("\nnatOutgoing pools: {}\n", n.join(", ")));
    }
    if let (Some(at), Some(ms)) = (s.last_reconcile_unix, s.last_reconcile_ms) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(at);
        out.push_str(&format!(
            "\nLast reconcile {} ago, took {ms:.1} ms\n",
            duration(now.saturating_sub(at))
        ));
    }
    if !s.problems.is_empty() {
        out.push_str("\nProblems\n");
        for p in &s.problems {
            out.push_str(&format!("  - {p}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serval::node::desired::PeerType;
    use serval::node::status::{BfdRow, PeerRow, RouteRow};

    #[test]
    fn text_status_shows_peers_routes_and_problems() {
        let s = NodeStatus {
            node: "n1".into(),
            ipv4_address: Some("192.0.2.1/24".parse().unwrap()),
            asn: 64512,
            peers: vec![
                PeerRow {
                    address: "192.0.2.2".parse().unwrap(),
                    name: Some("n2".into()),
                    peer_type: PeerType::Mesh,
                    asn: 64512,
                    state: bgp::status::SessionState::Established,
                    uptime_secs: Some(61),
                    prefixes_received: 1,
                    prefixes_accepted: 1,
                    prefixes_sent: 2,
                    flaps: 0,
                    last_error: None,
                    bfd: Some(BfdRow {
                        state: bgp::status::BfdState::Up,
                        multihop: false,
                        tx_interval_ms: Some(100),
                        rx_interval_ms: Some(100),
                        detection_time_ms: Some(300),
                        multiplier: 3,
                        local_diag: None,
                        remote_diag: None,
                        failures: 0,
                        hold_down_secs: None,
                    }),
                },
                PeerRow {
                    address: "192.0.2.3".parse().unwrap(),
                    name: Some("n3".into()),
                    peer_type: PeerType::Mesh,
                    asn: 64512,
                    state: bgp::status::SessionState::Active,
                    uptime_secs: None,
                    prefixes_received: 0,
                    prefixes_accepted: 0,
                    prefixes_sent: 0,
                    flaps: 1,
                    last_error: Some("BFD down: control detection time expired".into()),
                    bfd: Some(BfdRow {
                        state: bgp::status::BfdState::Down,
                        multihop: false,
                        tx_interval_ms: None,
                        rx_interval_ms: None,
                        detection_time_ms: None,
                        multiplier: 3,
                        local_diag: Some("control detection time expired".into()),
                        remote_diag: None,
                        failures: 1,
                        hold_down_secs: Some(2),
                    }),
                },
            ],
            routes_programmed: 1,
            routes: vec![RouteRow {
                prefix: "10.65.0.0/26".parse().unwrap(),
                kind: "blackhole".into(),
                via: None,
                device: None,
                paths: 0,
                error: None,
            }],
            problems: vec!["tunl0: no ipip for IP pool p1".into()],
            ..NodeStatus::default()
        };
        let t = text(&s, true);
        for want in [
            "192.0.2.2",
            "mesh",
            "Established",
            "00:01:01",
            "1/2",
            "10.65.0.0/26",
            "blackhole",
            "NOT READY",
            "no ipip for IP pool p1",
            "BFD",
            "Up tx 100ms rx 100ms x3",
            "Down (control detection time expired)",
        ] {
            assert!(t.contains(want), "{want} missing:\n{t}");
        }
        assert!(!text(&s, false).contains("10.65.0.0/26"));
        assert!(parse_label("a=b").is_ok() && parse_label("ab").is_err());
    }
}
