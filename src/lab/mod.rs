//! `serval lab`: a multi-node cluster in network namespaces on one machine — nodes on two
//! L2 subnets joined by a real BIRD (or FRR) top-of-rack router, one serval agent per node
//! on one embedded file store (or, with `--datastore kubernetes`, on a real kube-apiserver
//! in the lab: `kube.rs`), pods wired by serval's CNI plugin — then the proof that it
//! works: each node's peers and routes, pod-to-pod pings within and across subnets, the
//! ToR's view of the pod blocks, and a pod's egress through natOutgoing. `--tors 2` puts
//! two ToRs on one switch and the outside host behind both (`topology.rs` draws it);
//! `--bfd` runs BFD at 100 ms × 3 on the mesh and the ToR sessions (`tor.rs`, `pods.rs`).

pub mod kube;
pub mod pods;
pub mod report;
pub mod topology;
pub mod tor;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use topology::LabNode;
use tor::{Tor, TorKind};

pub const DEFAULT_DIR: &str = "/var/lib/serval/lab";
pub const POOL_CIDR: &str = "10.244.0.0/16";
pub const POOL_NAME: &str = "lab-pool";

/// Where the agents and the CNI plugin keep the cluster's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum LabDatastore {
    /// One embedded file store in the lab's directory.
    #[default]
    File,
    /// A real etcd and kube-apiserver in the lab (namespace svlab-kube), serval's CRDs.
    Kubernetes,
}

/// How pod traffic crosses subnets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum Encap {
    /// IP-in-IP when the kernel has it, else VXLAN (said so).
    Auto,
    Ipip,
    Vxlan,
    /// No encapsulation: the ToR routes pod traffic itself.
    None,
}

#[derive(Clone, Debug, clap::Args)]
pub struct UpArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Number of L2 subnets the nodes are spread over.
    #[arg(long, default_value_t = 2)]
    pub subnets: usize,
    /// Pods per node.
    #[arg(long, default_value_t = 2)]
    pub pods: usize,
    /// Encapsulation across subnets (CrossSubnet mode; same-subnet traffic is never encapsulated).
    #[arg(long, value_enum, default_value = "auto")]
    pub encap: Encap,
    /// The top-of-rack router's software.
    #[arg(long, value_enum, default_value = "bird")]
    pub tor: TorKind,
    /// Top-of-rack routers: 1, or 2 on one switch, every node peering with both and the
    /// outside host reaching the nodes through both (BIRD only).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub tors: u8,
    /// BFD (100 ms × 3) on the node-to-node mesh and on the nodes' sessions to the ToRs
    /// (BIRD only), so that a dead node or ToR is noticed in a fraction of a second
    /// instead of the hold time.
    #[arg(long)]
    pub bfd: bool,
    /// No natOutgoing on the pool and no egress check (for kernels whose nftables lacks
    /// the ip family, such as the User-Mode Linux one the tests use for IP-in-IP).
    #[arg(long)]
    pub no_nat: bool,
    /// Where the cluster's state lives: the embedded file store, or a real Kubernetes
    /// API server started in the lab (built by integration/k8s/build.sh), whose admin
    /// kubeconfig and kubectl command the report prints.
    #[arg(long, value_enum, default_value = "file")]
    pub datastore: LabDatastore,
    /// Where the lab keeps its store, configs and logs.
    #[arg(long, default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
}

/// What `up` built, so that `status` and `down` find it again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabState {
    pub nodes: Vec<LabNode>,
    pub pods: Vec<pods::Pod>,
    pub tor: TorKind,
    pub encap: Encap,
    pub dir: PathBuf,
    /// Why the encapsulation is what it is.
    pub encap_note: Option<String>,
    /// Whether the pool masquerades (and the report checks egress).
    #[serde(default = "yes")]
    pub nat: bool,
    #[serde(default)]
    pub datastore: LabDatastore,
    /// The control plane, once started (kubernetes datastore).
    #[serde(default)]
    pub kube: Option<kube::ControlPlane>,
    /// How many top-of-rack routers.
    #[serde(default = "one")]
    pub tors: u8,
    /// BFD on the mesh and the nodes' sessions to the ToRs.
    #[serde(default)]
    pub bfd: bool,
}

fn one() -> u8 {
    1
}

impl LabState {
    /// Every ToR of the lab.
    pub fn tors(&self) -> Vec<Tor> {
        Tor::all(self.tor, &self.dir, self.tors, self.bfd)
    }
}

fn yes() -> bool {
    true
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("lab.json")
}

pub fn load(dir: &Path) -> anyhow::Result<LabState> {
    let p = state_path(dir);
    let text = std::fs::read_to_string(&p)
        .with_context(|| format!("no lab at {} (serval lab up first)", dir.display()))?;
    serde_json::from_str(&text).with_context(|| format!("reading {}", p.display()))
}

/// The binaries the lab runs: this one, and the CNI plugin built beside it.
pub struct Binaries {
    pub serval: PathBuf,
    pub cni: PathBuf,
}

impl Binaries {
    pub fn find() -> anyhow::Result<Self> {
        let serval = std::env::current_exe().context("locating the serval binary")?;
        let dir = serval.parent().map(Path::to_path_buf).unwrap_or_default();
        let candidates = [dir.join("serval-cni"), PathBuf::from("/opt/cni/bin/serval")];
        let Some(cni) = candidates.iter().find(|p| p.exists()).cloned() else {
            bail!(
                "the CNI plugin is not built: run `cargo build --bins` (it is looked for at {})",
                candidates[0].display()
            );
        };
        Ok(Binaries { serval, cni })
    }
}

fn require(tools: &[(&str, &str)]) -> anyhow::Result<()> {
    for (tool, package) in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            bail!("{tool} is needed: apt-get install {package}");
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the lab creates network namespaces: run it as root");
    }
    Ok(())
}

pub fn up(a: UpArgs) -> anyhow::Result<()> {
    let tor_tools: &[(&str, &str)] = match a.tor {
        TorKind::Bird => &[("bird", "bird2"), ("birdc", "bird2")],
        TorKind::Frr => &[("vtysh", "frr")],
    };
    require(&[
        ("ip", "iproute2"),
        ("ping", "iputils-ping"),
        ("nft", "nftables"),
    ])?;
    require(tor_tools)?;
    if a.tor != TorKind::Bird && (a.tors > 1 || a.bfd) {
        bail!(
            "--tors 2 and --bfd need --tor bird (BIRD runs the ToRs' and the outside host's BFD)"
        );
    }
    if a.datastore == LabDatastore::Kubernetes {
        require(&[("openssl", "openssl")])?;
        kube::binaries()?;
    }
    let bins = Binaries::find()?;
    if !topology::existing().is_empty() || state_path(&a.dir).exists() {
        bail!("a lab is already up (or left over): run `serval lab down` first");
    }
    let nodes = topology::plan(a.nodes, a.subnets)?;
    let started = Instant::now();
    let (encap, encap_note) = choose_encap(a.encap);
    if let Some(note) = &encap_note {
        println!("{note}");
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let mut state = LabState {
        nodes: nodes.clone(),
        pods: Vec::new(),
        tor: a.tor,
        encap,
        dir: a.dir.clone(),
        encap_note,
        nat: !a.no_nat,
        datastore: a.datastore,
        kube: None,
        tors: a.tors,
        bfd: a.bfd,
    };
    write_state(&state)?;
    let result = build(&a, &bins, &mut state);
    write_state(&state)?;
    if let Err(e) = result {
        eprintln!(
            "serval lab up failed: {e:#}\nlogs are under {}; `serval lab down` removes everything",
            a.dir.display()
        );
        return Err(e);
    }
    println!("lab up in {:.1} s\n", started.elapsed().as_secs_f64());
    report::print(&state, &bins)
}

fn write_state(state: &LabState) -> anyhow::Result<()> {
    let p = state_path(&state.dir);
    let tmp = p.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(&tmp, &p)?;
    Ok(())
}

fn choose_encap(asked: Encap) -> (Encap, Option<String>) {
    match asked {
        Encap::Auto if topology::kernel_has_ipip() => (
            Encap::Ipip,
            Some("encapsulation across subnets: IP-in-IP (ipipMode: CrossSubnet)".into()),
        ),
        Encap::Auto => (
            Encap::Vxlan,
            Some(
                "this kernel has no IP-in-IP (ipip) support, so the lab uses VXLAN across subnets \
                 (vxlanMode: CrossSubnet); run it under a kernel with ipip for IPIP"
                    .into(),
            ),
        ),
        other => (other, None),
    }
}

fn build(a: &UpArgs, bins: &Binaries, state: &mut LabState) -> anyhow::Result<()> {
    println!(
        "building {} nodes on {} subnets, {} ToR {:?}{}",
        state.nodes.len(),
        a.subnets,
        a.tors,
        a.tor,
        if a.bfd { ", BFD 100 ms × 3" } else { "" }
    );
    topology::build(&state.nodes, a.tors)?;
    let shape = pods::Shape {
        encap: state.encap,
        nat: state.nat,
        tors: state.tors,
        bfd: state.bfd,
    };
    let store = match a.datastore {
        LabDatastore::File => {
            let store = format!("file:{}", a.dir.join("store.json").display());
            pods::configure_cluster(bins, &store, &state.nodes, &shape)?;
            pods::StoreAccess {
                datastore: store,
                kubeconfig: None,
            }
        }
        LabDatastore::Kubernetes => start_control_plane(state, &shape)?,
    };
    let tors = state.tors();
    for tor in &tors {
        tor.start(&state.nodes)?;
    }
    let ext = (state.tors > 1).then(|| tor::Ext::new(&a.dir, state.tors));
    if let Some(ext) = &ext {
        ext.start()?;
    }
    for n in &state.nodes {
        pods::start_agent(bins, &store, n, &a.dir)?;
    }
    wait(
        "every agent ready and its sessions up",
        Duration::from_secs(60),
        || pods::all_established(bins, state),
    )?;
    for tor in &tors {
        wait(
            &format!("{}'s sessions up", tor.name()),
            Duration::from_secs(60),
            || {
                tor.established()
                    .map(|(up, all)| up == all && all == tor.sessions(state.nodes.len()))
            },
        )?;
    }
    if let Some(ext) = &ext {
        wait(
            "the outside host's sessions up",
            Duration::from_secs(60),
            || {
                ext.established()
                    .map(|(up, all)| up == all && all == usize::from(state.tors))
            },
        )?;
    }
    pods::create_pods(bins, &store, &state.nodes, a.pods, &a.dir, &mut state.pods)?;
    wait(
        "every node's routes to the other nodes' blocks",
        Duration::from_secs(60),
        || pods::routes_converged(state),
    )?;
    Ok(())
}

/// The control plane in its namespace, serval's CRDs, the Nodes, and the cluster's
/// configuration applied with kubectl: what the agents need before they start.
fn start_control_plane(
    state: &mut LabState,
    shape: &pods::Shape,
) -> anyhow::Result<pods::StoreAccess> {
    let t = Instant::now();
    topology::build_control_plane_host()?;
    let cp = kube::ControlPlane::start(&state.dir)?;
    println!(
        "kube-apiserver {} ready at {} after {:.1} s",
        cp.version,
        cp.url,
        t.elapsed().as_secs_f64()
    );
    // Recorded before anything else can fail, so that `status` and the error message
    // show where it is.
    state.kube = Some(cp.clone());
    write_state(state)?;
    cp.install_crds()?;
    cp.register_nodes(&state.nodes)?;
    let config = format!(
        "{}---\n{}",
        pods::pool_yaml(state.encap, state.nat),
        pods::cluster_yaml(&state.nodes, shape)
    );
    cp.apply(&config)?;
    Ok(cp.store_access())
}

/// Wait for a condition, polling; fail naming what did not happen.
pub fn wait(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let last = match cond() {
            Ok(true) => return Ok(()),
            Ok(false) => None,
            Err(e) => Some(e),
        };
        if Instant::now() >= deadline {
            match last {
                Some(e) => bail!("timed out after {limit:?} waiting for {what}: {e:#}"),
                None => bail!("timed out after {limit:?} waiting for {what}"),
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn status(dir: &Path) -> anyhow::Result<()> {
    let state = load(dir)?;
    report::print(&state, &Binaries::find()?)
}

pub fn down(dir: &Path) -> anyhow::Result<()> {
    let errors = topology::destroy();
    if dir.exists() && state_path(dir).exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    if !errors.is_empty() {
        bail!(
            "some namespaces could not be removed:\n{}",
            errors.join("\n")
        );
    }
    println!(
        "lab down: namespaces, processes and {} removed",
        dir.display()
    );
    Ok(())
}
