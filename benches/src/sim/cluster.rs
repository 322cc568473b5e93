//! The simulated cluster: etcd, a BIRD top-of-rack router and N `serval node run` agents,
//! each in its own namespace on one bridge (one L2 subnet, 10.70.0.0/16, as the lab's
//! nodes share a rack's subnet).
//!
//! ```text
//!   svsim-P-etcd 10.70.0.2   svsim-P-tor 10.70.0.1 (BIRD, AS 65000)
//!          │                        │
//!   svsim-P-br  br0 ────────────────┴───────────── … one port per node
//!          │             │                  │
//!   svsim-P-n0 10.70.1.10  svsim-P-n1 …   svsim-P-n299     AS 64512
//! ```
//!
//! Mesh: the node-to-node mesh, and every node peers with the ToR. Reflectors: nodes 0
//! and 1 carry `routeReflectorClusterID` and the label `route-reflector`, one `BGPPeer`
//! (`nodeSelector: all()`, `peerSelector: route-reflector == 'true'`) makes every node
//! peer with them (and them with each other), the mesh is off, and only the reflectors
//! peer with the ToR. Every node owns one /26 block from the start, claimed for it
//! before its agent starts.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use ipam::allocator::{AssignIpRequest, NodeInfo};
use ipam::model::{HandleId, IpPool, NodeName, PoolName};
use ipam::Ipam;
use ipnet::Ipv4Net;
use serval_integration::NsChild;

use super::net::{ip_batch, SimNs};
use super::routes::RouteWatch;
use crate::agent_lab::agent_argv;

pub const POOL: &str = "10.244.0.0/16";
pub const TOR_ADDR: Ipv4Addr = Ipv4Addr::new(10, 70, 0, 1);
pub const ETCD_ADDR: Ipv4Addr = Ipv4Addr::new(10, 70, 0, 2);
pub const NODE_AS: u32 = 64512;
pub const TOR_AS: u32 = 65000;
pub const RR_CLUSTER_ID: &str = "224.0.0.1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// The node-to-node mesh; every node peers with the ToR.
    Mesh,
    /// Two nodes reflect, the others peer only with them; the reflectors peer with the ToR.
    Rr,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Mesh => "mesh",
            Shape::Rr => "rr",
        }
    }
}

/// Timers the run configures, reported with its figures.
#[derive(Clone, Copy, Debug)]
pub struct Timers {
    /// Graceful-restart time the nodes announce (`nodeMeshMaxRestartTime`, and
    /// `maxRestartTime` of the reflector peering).
    pub restart_secs: u64,
    /// Keepalive of the reflector peering (`keepAliveTime`; hold three times it). The
    /// mesh has no such setting: its sessions hold for 90 s.
    pub keepalive_secs: u64,
}

pub const MESH_HOLD_SECS: u64 = 90;

impl Timers {
    pub fn hold_secs(&self, shape: Shape) -> u64 {
        match shape {
            Shape::Mesh => MESH_HOLD_SECS,
            Shape::Rr => 3 * self.keepalive_secs,
        }
    }
}

pub struct Node {
    pub name: String,
    pub addr: Ipv4Addr,
    pub dir: PathBuf,
    pub agent: Option<NsChild>,
    pub reflector: bool,
    /// The blocks this node owns, in the order they were claimed.
    pub blocks: Vec<Ipv4Net>,
    pub ns: SimNs,
}

/// The cluster. Fields drop in order: agents, then the route watch, BIRD and etcd with
/// their namespaces, then the bridge.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub watch: RouteWatch,
    pub shape: Shape,
    pub timers: Timers,
    pub serval: PathBuf,
    pub dir: PathBuf,
    pub rt: tokio::runtime::Runtime,
    pub ipam: Ipam,
    /// Blocks handed out so far (block k is POOL's k-th /26).
    next_block: u32,
    _tor: SimNs,
    etcd: NsChild,
    _etcd_ns: SimNs,
    _bridge: SimNs,
    /// The kernel's ARP table limits as they were, put back last.
    _neigh: NeighLimits,
}

/// Node `i`'s address: 10.70.1.10, 10.70.1.11, … 200 per /24.
pub fn node_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 70, 1 + (i / 200) as u8, 10 + (i % 200) as u8)
}

/// The `k`th /26 of the pool.
pub fn block(k: u32) -> Ipv4Net {
    let base = u32::from(Ipv4Addr::new(10, 244, 0, 0)) + k * 64;
    Ipv4Net::new(Ipv4Addr::from(base), 26).unwrap_or_default()
}

/// The namespace the harness started in: each cluster is built from there (the kernel's
/// settings under /proc/sys/net are those of the caller's namespace).
static HOME: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();

fn go_home() -> anyhow::Result<()> {
    let home = match HOME.get() {
        Some(f) => f,
        None => {
            let f = std::fs::File::open("/proc/thread-self/ns/net")
                .context("opening /proc/thread-self/ns/net")?;
            HOME.get_or_init(|| f)
        }
    };
    // SAFETY: setns on a namespace descriptor we hold; it moves only this thread.
    if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns back: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Moves the calling thread into namespace `ns`: the harness's own sockets (the etcd
/// client, the metrics scrapes) then live beside etcd.
fn enter(ns: &str) -> anyhow::Result<()> {
    let path = format!("/run/netns/{ns}");
    let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns on a namespace descriptor we hold; it moves only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {path}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

impl Cluster {
    /// Builds the network, starts etcd and BIRD, writes the pool, the BGP resources and
    /// every node's first block. The agents are not started: [`Cluster::start_agents`].
    pub fn build(
        n: usize,
        shape: Shape,
        timers: Timers,
        serval: &Path,
        dir: &Path,
    ) -> anyhow::Result<Cluster> {
        if n < 2 {
            bail!("--nodes: at least 2");
        }
        if n > 1000 {
            bail!("--nodes: at most 1000 (addresses 10.70.1.10 … 10.70.5.209)");
        }
        go_home()?;
        // Every mesh node resolves every other: N² ARP entries in one table that all
        // namespaces share.
        let entries = match shape {
            Shape::Mesh => (n + 4) * (n + 4),
            Shape::Rr => 8 * (n + 4),
        };
        let neigh = NeighLimits::raise(entries)?;
        let bridge = SimNs::new("br")?;
        ip_batch(bridge.name(), "link add br0 type bridge\nlink set br0 up\n")?;
        let mut ports = String::new();
        let mut wire = |ns: &SimNs, port: &str, addr: Ipv4Addr| -> anyhow::Result<()> {
            ip_batch(
                ns.name(),
                &format!(
                    "link add eth0 type veth peer name {port} netns {br}\n\
                     link set eth0 addrgenmode none\n\
                     addr add {addr}/16 dev eth0\n\
                     link set eth0 up\n",
                    br = bridge.name()
                ),
            )?;
            ports.push_str(&format!(
                "link set {port} addrgenmode none\nlink set {port} master br0\nlink set {port} up\n"
            ));
            Ok(())
        };
        let etcd_ns = SimNs::new("etcd")?;
        wire(&etcd_ns, "etcd", ETCD_ADDR)?;
        let tor = SimNs::new("tor")?;
        wire(&tor, "tor", TOR_ADDR)?;
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("n{i}");
            let ns = SimNs::new(&name)?;
            wire(&ns, &format!("p{i}"), node_addr(i))?;
            nodes.push(Node {
                dir: dir.join(&name),
                name,
                addr: node_addr(i),
                agent: None,
                reflector: shape == Shape::Rr && i < 2,
                blocks: Vec::new(),
                ns,
            });
        }
        ip_batch(bridge.name(), &ports)?;

        let etcd = start_etcd(&etcd_ns, dir)?;
        enter(etcd_ns.name())?;
        wait_etcd(Duration::from_secs(30))?;

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?;
        let url = format!("etcd:http://{ETCD_ADDR}:2379");
        let ds: ipam::store::select::Datastore = url.parse().map_err(|e| anyhow!("{url}: {e}"))?;
        let store = rt
            .block_on(ipam::store::select::open(&ds))
            .map_err(|e| anyhow!("connecting to etcd: {e}"))?;
        let ipam = Ipam::new(store);
        let pool = IpPool::new(
            PoolName::new("pods").map_err(|e| anyhow!("{e}"))?,
            POOL.parse().context("pool")?,
        );
        rt.block_on(ipam.add_pool(pool))
            .map_err(|e| anyhow!("adding the pool: {e}"))?;

        std::fs::create_dir_all(dir)?;
        let resources = dir.join("resources.yaml");
        std::fs::write(&resources, resources_yaml(shape, timers, &nodes))?;
        let out = std::process::Command::new(serval)
            .args(["apply", "-f"])
            .arg(&resources)
            .args(["--datastore", &url])
            .output()
            .context("serval apply")?;
        if !out.status.success() {
            bail!(
                "serval apply: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        start_bird(&tor, dir, &nodes)?;

        let watch = RouteWatch::start(
            &nodes
                .iter()
                .map(|n| n.ns.name().to_owned())
                .collect::<Vec<_>>(),
        )?;
        let mut c = Cluster {
            nodes,
            watch,
            shape,
            timers,
            serval: serval.to_owned(),
            dir: dir.to_owned(),
            rt,
            ipam,
            next_block: 1,
            _tor: tor,
            etcd,
            _etcd_ns: etcd_ns,
            _bridge: bridge,
            _neigh: neigh,
        };
        for i in 0..n {
            c.claim_block(i)?;
        }
        Ok(c)
    }

    /// Claims the next free block for node `i` (one address in it, in process, through
    /// the ipam crate on etcd); returns the block and how long the store write took.
    pub fn claim_block(&mut self, i: usize) -> anyhow::Result<(Ipv4Net, Duration)> {
        let b = block(self.next_block);
        self.next_block += 1;
        let req = AssignIpRequest {
            ip: IpAddr::V4(Ipv4Addr::from(u32::from(b.network()) + 1)),
            handle: HandleId::new(format!("sim-block-{}", self.next_block))
                .map_err(|e| anyhow!("{e}"))?,
            node: self.node_info(i)?,
            namespace: None,
            pod: None,
        };
        let t0 = Instant::now();
        self.rt
            .block_on(self.ipam.assign_ip(req))
            .map_err(|e| anyhow!("claiming {b} for n{i}: {e}"))?;
        let took = t0.elapsed();
        self.nodes[i].blocks.push(b);
        Ok((b, took))
    }

    pub fn node_info(&self, i: usize) -> anyhow::Result<NodeInfo> {
        Ok(NodeInfo::new(
            NodeName::new(&self.nodes[i].name).map_err(|e| anyhow!("{e}"))?,
        ))
    }

    /// Starts node `i`'s agent.
    pub fn start_agent(&mut self, i: usize, log_level: &str) -> anyhow::Result<()> {
        let n = &mut self.nodes[i];
        std::fs::create_dir_all(&n.dir)?;
        let store = format!("etcd:http://{ETCD_ADDR}:2379");
        let mut argv = agent_argv(&self.serval, &n.name, &store, &n.dir, log_level);
        argv.extend([
            "--ip".to_owned(),
            format!("{}/16", n.addr),
            "--metrics-addr".to_owned(),
            "none".to_owned(),
        ]);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let child =
            n.ns.handle()
                .spawn(&argv, Some(&n.dir.join("agent.log")))
                .map_err(|e| anyhow!("starting the agent of {}: {e}", n.name))?;
        n.agent = Some(child);
        Ok(())
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].agent.as_ref().map(NsChild::pid)
    }

    /// Fails naming any agent that has exited, with its log's tail.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for n in &mut self.nodes {
            if let Some(a) = &mut n.agent {
                if let Ok(Some(status)) = a.try_wait() {
                    bail!(
                        "the agent of {} exited ({status}):\n{}",
                        n.name,
                        log_tail(&n.dir.join("agent.log"))
                    );
                }
            }
        }
        Ok(())
    }

    /// Starts again every agent that has exited, as the kubelet restarts a DaemonSet's
    /// pod; returns the nodes restarted. Their logs keep the exit's message.
    pub fn restart_exited(&mut self, log_level: &str) -> anyhow::Result<Vec<usize>> {
        let mut exited = Vec::new();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if let Some(a) = &mut n.agent {
                if let Ok(Some(_)) = a.try_wait() {
                    exited.push(i);
                }
            }
        }
        for &i in &exited {
            self.start_agent(i, log_level)?;
        }
        Ok(exited)
    }

    /// Every node's blocks as (owner, block).
    pub fn all_blocks(&self) -> Vec<(usize, Ipv4Net)> {
        self.nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.blocks.iter().map(move |b| (i, *b)))
            .collect()
    }

    /// BIRD's view: how many networks (blocks) it has routes for.
    pub fn tor_routes(&self) -> anyhow::Result<u64> {
        let ctl = self.dir.join("tor").join("bird.ctl");
        let out = std::process::Command::new("birdc")
            .args(["-s", &ctl.display().to_string(), "show", "route", "count"])
            .output()
            .context("birdc (Debian package bird2)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "N of M routes for K networks in table master4"
        Ok(text
            .lines()
            .find_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                let k = w.iter().position(|x| *x == "networks")?;
                w.get(k.checked_sub(1)?)?.parse().ok()
            })
            .unwrap_or(0))
    }

    pub fn etcd_pid(&self) -> u32 {
        self.etcd.pid()
    }
}

const NEIGH: &str = "/proc/sys/net/ipv4/neigh/default/gc_thresh";

/// The kernel's IPv4 neighbour table is one for all namespaces, and its hard limit
/// (`net.ipv4.neigh.default.gc_thresh3`, 1024 by default) is machine-wide: past it a
/// node cannot resolve a new neighbour (`ENOBUFS`), and its BGP connections to the
/// nodes it cannot resolve go unanswered. Raised for the run when too low, and put
/// back afterwards.
struct NeighLimits {
    old: Option<(String, String)>,
}

impl NeighLimits {
    fn raise(entries: usize) -> anyhow::Result<NeighLimits> {
        let read = |k: u8| -> anyhow::Result<String> {
            Ok(std::fs::read_to_string(format!("{NEIGH}{k}"))
                .with_context(|| format!("reading {NEIGH}{k}"))?
                .trim()
                .to_owned())
        };
        let (t2, t3) = (read(2)?, read(3)?);
        let have: usize = t3.parse().unwrap_or(0);
        if have >= entries {
            return Ok(NeighLimits { old: None });
        }
        let new3 = entries.next_power_of_two().max(1024);
        eprintln!(
            "cluster-sim: net.ipv4.neigh.default.gc_thresh3 {have} -> {new3} (gc_thresh2 -> {}) \
             for {entries} ARP entries; put back at the end",
            new3 / 2
        );
        std::fs::write(format!("{NEIGH}3"), new3.to_string())
            .with_context(|| format!("writing {NEIGH}3"))?;
        std::fs::write(format!("{NEIGH}2"), (new3 / 2).to_string())
            .with_context(|| format!("writing {NEIGH}2"))?;
        Ok(NeighLimits {
            old: Some((t2, t3)),
        })
    }
}

impl Drop for NeighLimits {
    fn drop(&mut self) {
        if let Some((t2, t3)) = &self.old {
            let _ = go_home();
            let _ = std::fs::write(format!("{NEIGH}2"), t2);
            let _ = std::fs::write(format!("{NEIGH}3"), t3);
        }
    }
}

fn start_etcd(ns: &SimNs, dir: &Path) -> anyhow::Result<NsChild> {
    serval_integration::tools::require("etcd").map_err(|e| anyhow!("{e}"))?;
    let data = dir.join("etcd-data");
    std::fs::create_dir_all(dir)?;
    let data = data.display().to_string();
    let client = format!("http://{ETCD_ADDR}:2379,http://127.0.0.1:2379");
    let advertise = format!("http://{ETCD_ADDR}:2379");
    let argv = [
        "etcd",
        "--data-dir",
        &data,
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &advertise,
        "--listen-peer-urls",
        "http://127.0.0.1:2380",
        "--quota-backend-bytes",
        "4294967296",
    ];
    ns.handle()
        .spawn(&argv, Some(&dir.join("etcd.log")))
        .map_err(|e| anyhow!("starting etcd: {e}"))
}

fn wait_etcd(timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match super::etcd::http_get("/health") {
            Ok(body) if body.contains("\"health\":\"true\"") => return Ok(()),
            Ok(body) => last = body,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("etcd not healthy within {timeout:?}: {last}")
}

/// The BGP resources of the shape, and the reflectors' ServalNodes.
fn resources_yaml(shape: Shape, t: Timers, nodes: &[Node]) -> String {
    let mesh = shape == Shape::Mesh;
    let mut y = format!(
        "apiVersion: serval.dev/v1\nkind: BGPConfiguration\nmetadata: {{name: default}}\n\
         spec:\n  asNumber: {NODE_AS}\n  nodeToNodeMeshEnabled: {mesh}\n  \
         nodeMeshMaxRestartTime: {r}s\n",
        r = t.restart_secs
    );
    let tor_selector = if mesh {
        "all()"
    } else {
        "route-reflector == 'true'"
    };
    y.push_str(&format!(
        "---\napiVersion: serval.dev/v1\nkind: BGPPeer\nmetadata: {{name: tor}}\nspec:\n  \
         nodeSelector: \"{tor_selector}\"\n  peerIP: {TOR_ADDR}\n  asNumber: {TOR_AS}\n  \
         maxRestartTime: {r}s\n",
        r = t.restart_secs
    ));
    if !mesh {
        y.push_str(&format!(
            "---\napiVersion: serval.dev/v1\nkind: BGPPeer\nmetadata: {{name: reflectors}}\n\
             spec:\n  nodeSelector: all()\n  peerSelector: route-reflector == 'true'\n  \
             keepAliveTime: {k}s\n  maxRestartTime: {r}s\n",
            k = t.keepalive_secs,
            r = t.restart_secs
        ));
        for n in nodes.iter().filter(|n| n.reflector) {
            y.push_str(&format!(
                "---\napiVersion: serval.dev/v1\nkind: ServalNode\nmetadata:\n  name: {}\n  \
                 labels: {{route-reflector: 'true'}}\nspec:\n  bgp: {{routeReflectorClusterID: \
                 {RR_CLUSTER_ID}}}\n",
                n.name
            ));
        }
    }
    y
}

/// BIRD as the rack's router: a session with each node it peers with, everything they
/// send accepted, nothing sent back.
fn start_bird(tor: &SimNs, dir: &Path, nodes: &[Node]) -> anyhow::Result<()> {
    serval_integration::tools::require("bird").map_err(|e| anyhow!("{e}"))?;
    let d = dir.join("tor");
    std::fs::create_dir_all(&d)?;
    let mut c = format!(
        "router id {TOR_ADDR};\nlog \"{}\" {{ warning, error, fatal }};\nprotocol device {{ }}\n",
        d.join("bird.log").display()
    );
    for n in nodes
        .iter()
        .filter(|n| n.reflector || !nodes.iter().any(|m| m.reflector))
    {
        c.push_str(&format!(
            "protocol bgp {name} {{\n  local {TOR_ADDR} as {TOR_AS};\n  neighbor {addr} as \
             {NODE_AS};\n  hold time 9;\n  graceful restart on;\n  error wait time 1, 5;\n  \
             connect retry time 2;\n  ipv4 {{ import all; export none; }};\n}}\n",
            name = n.name,
            addr = n.addr
        ));
    }
    let conf = d.join("bird.conf");
    std::fs::write(&conf, c)?;
    let (conf, ctl, pid) = (
        conf.display().to_string(),
        d.join("bird.ctl").display().to_string(),
        d.join("bird.pid").display().to_string(),
    );
    tor.handle()
        .exec(&["bird", "-c", &conf, "-s", &ctl, "-P", &pid])
        .map_err(|e| anyhow!("starting BIRD: {e}"))?;
    Ok(())
}

pub fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
