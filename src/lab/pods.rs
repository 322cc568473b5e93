//! The lab's cluster: the pool and BGP resources in the datastore (the embedded file store,
//! or the Kubernetes API), one agent per node namespace, and pods wired by serval's CNI
//! plugin exactly as a container runtime calls it.

use super::topology::{self, ns_exec, LabNode, NODE_AS, TOR_AS};
use super::{Binaries, Encap, POOL_CIDR, POOL_NAME};
use anyhow::{anyhow, bail, Context};
use ipam::store::{select::Datastore, Object, Write};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How the agents and the CNI plugin reach the lab's datastore.
#[derive(Clone, Debug)]
pub struct StoreAccess {
    /// `file:PATH` or `kubernetes`, as `--datastore` takes it.
    pub datastore: String,
    /// On Kubernetes: the kubeconfig they speak with.
    pub kubeconfig: Option<PathBuf>,
}

/// A pod the lab created: its namespace and the address the CNI plugin gave it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pod {
    pub name: String,
    pub node: String,
    pub netns: String,
    pub ip: IpAddr,
    pub container_id: String,
}

/// Where one node's agent keeps its files.
pub fn node_dir(lab_dir: &Path, node: &str) -> PathBuf {
    lab_dir.join(node)
}

pub fn node_socket(lab_dir: &Path, node: &str) -> PathBuf {
    node_dir(lab_dir, node).join("node.sock")
}

/// What the cluster's resources depend on besides the nodes.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub encap: Encap,
    pub nat: bool,
    /// ToRs each node peers with.
    pub tors: u8,
    /// BFD on the mesh and the ToR sessions (a `BFDProfile` both name).
    pub bfd: bool,
}

/// The `BFDProfile` the lab's sessions name with `--bfd`.
pub const BFD_PROFILE: &str = "lab-fast";

/// The pool (CrossSubnet in the chosen encapsulation, natOutgoing) and the BGP resources:
/// the iBGP mesh in AS 64512 and, per node, an eBGP peering with its subnet's ToR
/// address(es), as a network engineer would ask for it.
pub fn configure_cluster(
    bins: &Binaries,
    store: &str,
    nodes: &[LabNode],
    shape: &Shape,
) -> anyhow::Result<()> {
    let (encap, nat) = (shape.encap, shape.nat);
    let (ipip, vxlan) = pool_modes(encap);
    let (ipip, vxlan) = (kebab(ipip), kebab(vxlan));
    let mut args = vec![
        "pool",
        "--datastore",
        store,
        "add",
        POOL_CIDR,
        "--name",
        POOL_NAME,
        "--ipip-mode",
        ipip.as_str(),
        "--vxlan-mode",
        vxlan.as_str(),
    ];
    if nat {
        args.push("--nat-outgoing");
    }
    run_serval(bins, &args)?;
    apply_yaml(store, &cluster_yaml(nodes, shape))
}

/// The pool's `(ipipMode, vxlanMode)` for the chosen encapsulation, in Calico's spelling.
fn pool_modes(encap: Encap) -> (&'static str, &'static str) {
    match encap {
        Encap::Ipip => ("CrossSubnet", "Never"),
        Encap::Vxlan | Encap::Auto => ("Never", "CrossSubnet"),
        Encap::None => ("Never", "Never"),
    }
}

/// `CrossSubnet` as the CLI spells it: `cross-subnet`.
fn kebab(mode: &str) -> String {
    let mut out = String::new();
    for (i, c) in mode.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The lab's pool as an `IPPool` document: what `configure_cluster` adds with `serval
/// pool add`, for a datastore an administrator writes with `kubectl apply`.
pub fn pool_yaml(encap: Encap, nat: bool) -> String {
    let (ipip, vxlan) = pool_modes(encap);
    format!(
        "apiVersion: serval.dev/v1\nkind: IPPool\nmetadata:\n  name: {POOL_NAME}\n\
         spec:\n  cidr: {POOL_CIDR}\n  blockSize: 26\n  ipipMode: {ipip}\n  vxlanMode: {vxlan}\n  \
         natOutgoing: {nat}\n"
    )
}

/// The lab's BGPConfiguration and BGPPeers (and with BFD its `BFDProfile`) as YAML, in
/// the shape `serval apply` takes: one peering per node and ToR, named `tor-NODE` for
/// the first ToR and `torK-NODE` for the others.
pub fn cluster_yaml(nodes: &[LabNode], shape: &Shape) -> String {
    let mut y = format!(
        "apiVersion: serval.dev/v1\nkind: BGPConfiguration\nmetadata:\n  name: default\n\
         spec:\n  nodeToNodeMeshEnabled: true\n  asNumber: {NODE_AS}\n"
    );
    let bfd = if shape.bfd {
        y.push_str(&format!("  nodeMeshBFDProfile: {BFD_PROFILE}\n"));
        y.push_str(&format!(
            "---\napiVersion: serval.dev/v1\nkind: BFDProfile\nmetadata:\n  name: {BFD_PROFILE}\n\
             spec:\n  receiveInterval: {ms}\n  transmitInterval: {ms}\n  detectMultiplier: {mult}\n",
            ms = super::tor::BFD_INTERVAL_MS,
            mult = super::tor::BFD_MULTIPLIER,
        ));
        format!("  bfdProfile: {BFD_PROFILE}\n")
    } else {
        String::new()
    };
    for n in nodes {
        for k in 1..=shape.tors.max(1) {
            let name = if k == 1 {
                format!("tor-{}", n.name)
            } else {
                format!("tor{k}-{}", n.name)
            };
            y.push_str(&format!(
                "---\napiVersion: serval.dev/v1\nkind: BGPPeer\nmetadata:\n  name: {name}\n\
                 spec:\n  node: {node}\n  peerIP: {peer}\n  asNumber: {TOR_AS}\n{bfd}",
                node = n.name,
                peer = topology::tor_addr(n.subnet, k),
            ));
        }
    }
    y
}

/// Writes resources into the store, replacing objects of the same kind and name.
pub fn apply_yaml(store: &str, yaml: &str) -> anyhow::Result<()> {
    let docs = serval::resources::document::parse(yaml).map_err(|e| anyhow!("{e}"))?;
    let ds = Datastore::resolve(Some(store)).map_err(|e| anyhow!("{e}"))?;
    crate::cmd::ipam::block_on(async move {
        let st = ipam::store::select::open(&ds)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        for r in docs {
            let obj = Object::Resource(r.to_stored());
            let current = st.get(&obj.key()).await.map_err(|e| anyhow!("{e}"))?;
            st.commit(&[Write::put(obj, current.map(|v| v.revision))])
                .await
                .map_err(|e| anyhow!("writing {} {}: {e}", r.kind(), r.name))?;
        }
        Ok(())
    })
}

fn run_serval(bins: &Binaries, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(&bins.serval)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running serval {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "serval {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts `serval node run` in the node's namespace, detached, its log in the node's
/// directory. The agent finds its address on eth0 and its ToR from the BGPPeer.
pub fn start_agent(
    bins: &Binaries,
    store: &StoreAccess,
    n: &LabNode,
    lab_dir: &Path,
) -> anyhow::Result<()> {
    let dir = node_dir(lab_dir, &n.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let log = std::fs::File::create(dir.join("agent.log"))?;
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &n.netns])
        .arg(&bins.serval)
        .args(["node", "run", "--node", &n.name, "--datastore"])
        .arg(&store.datastore);
    match &store.kubeconfig {
        // On Kubernetes the agent takes its address from its Node's InternalIP, as on a
        // real cluster; SERVAL_NAMESPACE is where its Lease lives.
        Some(kubeconfig) => cmd
            .env("KUBECONFIG", kubeconfig)
            .env("SERVAL_NAMESPACE", super::kube::NAMESPACE),
        None => cmd.args(["--ip-autodetection-method", "interface=eth0"]),
    };
    cmd.args(["--state-dir", &p("state")])
        .args(["--socket", &p("node.sock")])
        .args(["--bgp-socket", &p("bgp.sock")])
        .args(["--metrics-addr", "127.0.0.1:9099"])
        .args(["--ready-file", &p("ready")])
        .args(["--mtu-file", &p("mtu")])
        .args(["--nodename-file", &p("nodename")])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own session, so that the agent outlives `serval lab up`.
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("starting the agent of {}", n.name))?;
    Ok(())
}

/// The agent's own status, as JSON.
pub fn node_status_json(
    bins: &Binaries,
    lab_dir: &Path,
    node: &str,
) -> anyhow::Result<serde_json::Value> {
    let sock = node_socket(lab_dir, node);
    let out = run_serval(
        bins,
        &[
            "node",
            "status",
            "--json",
            "--socket",
            &sock.to_string_lossy(),
        ],
    )?;
    serde_json::from_str(&out).with_context(|| format!("{node}: status is not JSON"))
}

/// Every agent answers and every one of its BGP sessions is Established.
pub fn all_established(bins: &Binaries, state: &super::LabState) -> anyhow::Result<bool> {
    for n in &state.nodes {
        let s = node_status_json(bins, &state.dir, &n.name)?;
        let peers = s["peers"]
            .as_array()
            .ok_or_else(|| anyhow!("{}: status has no peers list", n.name))?;
        // The other nodes and the ToR(s).
        if peers.len() < state.nodes.len() - 1 + usize::from(state.tors.max(1)) {
            return Ok(false);
        }
        if !peers.iter().all(|p| p["state"] == "Established") {
            return Ok(false);
        }
    }
    Ok(true)
}

fn cni_config(store: &StoreAccess, n: &LabNode, lab_dir: &Path) -> String {
    let dir = node_dir(lab_dir, &n.name);
    let mut config = serde_json::json!({
        "cniVersion": "1.1.0",
        "name": "k8s-pod-network",
        "type": "serval",
        "datastore": store.datastore,
        "nodename": n.name,
        "mtu_file": dir.join("mtu"),
        "ready_file": dir.join("ready"),
        "ipam_lock_file": lab_dir.join("ipam.lock"),
        "log_file_path": dir.join("cni.log"),
        "ipam": {"type": "serval-ipam", "assign_ipv4": "true", "assign_ipv6": "false"},
    });
    if let Some(kubeconfig) = &store.kubeconfig {
        config["kubernetes"] = serde_json::json!({ "kubeconfig": kubeconfig });
    }
    config.to_string()
}

/// Runs the CNI plugin in the node's namespace the way a runtime does.
fn cni(
    bins: &Binaries,
    n: &LabNode,
    command: &str,
    pod: &Pod,
    config: &str,
) -> anyhow::Result<serde_json::Value> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &n.netns])
        .arg(&bins.cni)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &pod.container_id)
        .env("CNI_NETNS", format!("/run/netns/{}", pod.netns))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni:/opt/cni/bin")
        .env(
            "CNI_ARGS",
            format!(
                "K8S_POD_NAMESPACE=lab;K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
                pod.name, pod.container_id
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running the CNI plugin")?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(config.as_bytes())?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "CNI {command} for {}: {} {}",
            pod.name,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(&text).with_context(|| format!("CNI {command} result: {text}"))
}

/// `per_node` pods on every node: a namespace each, wired by the CNI plugin.
pub fn create_pods(
    bins: &Binaries,
    store: &StoreAccess,
    nodes: &[LabNode],
    per_node: usize,
    lab_dir: &Path,
    pods: &mut Vec<Pod>,
) -> anyhow::Result<()> {
    for n in nodes {
        let config = cni_config(store, n, lab_dir);
        for j in 1..=per_node {
            let netns = topology::pod_netns(&n.name, j);
            topology::add_netns(&netns)?;
            let mut pod = Pod {
                name: format!("{}-pod{j}", n.name),
                node: n.name.clone(),
                netns,
                ip: IpAddr::from([0, 0, 0, 0]),
                container_id: format!("lab{:0>8}{j:0>4}", n.name.trim_start_matches("node")),
            };
            let result = cni(bins, n, "ADD", &pod, &config)?;
            let ip = result["ips"]
                .as_array()
                .and_then(|ips| ips.first())
                .and_then(|i| i["address"].as_str())
                .ok_or_else(|| anyhow!("CNI ADD for {} returned no address: {result}", pod.name))?;
            let net: IpNet = ip.parse().with_context(|| format!("CNI address {ip}"))?;
            pod.ip = net.addr();
            pods.push(pod);
        }
    }
    Ok(())
}

/// Every node has a route of serval's protocol for every pod on the other nodes, and a
/// blackhole for each of its own blocks.
pub fn routes_converged(state: &super::LabState) -> anyhow::Result<bool> {
    for n in &state.nodes {
        let routes = kernel_routes(&n.netns)?;
        for pod in state.pods.iter().filter(|p| p.node != n.name) {
            let covered = routes
                .iter()
                .any(|r| r.kind != "blackhole" && r.dst.contains(&pod.ip));
            if !covered {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// A kernel route of serval's protocol, as `ip -j route` gives it.
#[derive(Clone, Debug)]
pub struct KernelRoute {
    pub dst: IpNet,
    pub kind: String,
    pub via: Option<String>,
    pub dev: Option<String>,
    pub onlink: bool,
    /// Every next hop's gateway of a multipath route (empty for a single path).
    pub multipath: Vec<String>,
}

/// serval's routes in a namespace (protocol 83).
pub fn kernel_routes(netns: &str) -> anyhow::Result<Vec<KernelRoute>> {
    let out = ns_exec(netns, &["ip", "-j", "route", "show", "proto", "83"])?;
    let v: serde_json::Value =
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out })
            .context("ip -j route")?;
    let mut routes = Vec::new();
    for r in v.as_array().into_iter().flatten() {
        let Some(dst) = r["dst"].as_str() else {
            continue;
        };
        let Ok(dst) = dst
            .parse::<IpNet>()
            .or_else(|_| dst.parse::<IpAddr>().map(IpNet::from))
        else {
            continue;
        };
        let flags: Vec<&str> = r["flags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .collect();
        let nexthops = r["nexthops"].as_array();
        let (via, dev) = match nexthops.and_then(|n| n.first()) {
            Some(h) => (
                h["gateway"].as_str().map(str::to_string),
                h["dev"].as_str().map(str::to_string),
            ),
            None => (
                r["gateway"].as_str().map(str::to_string),
                r["dev"].as_str().map(str::to_string),
            ),
        };
        let multipath = nexthops
            .into_iter()
            .flatten()
            .filter_map(|h| h["gateway"].as_str().map(str::to_string))
            .collect();
        routes.push(KernelRoute {
            dst,
            kind: r["type"].as_str().unwrap_or("unicast").to_string(),
            via,
            dev,
            onlink: flags.contains(&"onlink"),
            multipath,
        });
    }
    Ok(routes)
}

/// One ping from a pod; true when a reply came back.
pub fn ping(from_netns: &str, to: IpAddr) -> bool {
    ns_exec(from_netns, &["ping", "-c", "1", "-W", "2", &to.to_string()]).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_tors_with_bfd_are_resources_the_agents_take() {
        let nodes = topology::plan(3, 2).unwrap();
        let shape = Shape {
            encap: Encap::Vxlan,
            nat: true,
            tors: 2,
            bfd: true,
        };
        let y = cluster_yaml(&nodes, &shape);
        let docs = serval::resources::document::parse(&y).unwrap_or_else(|e| panic!("{e}\n{y}"));
        let names: Vec<String> = docs
            .iter()
            .map(|r| format!("{} {}", r.kind(), r.name))
            .collect();
        // The configuration, the profile, and a peering per node and ToR.
        assert_eq!(docs.len(), 2 + 3 * 2, "{names:?}");
        assert!(y.contains("nodeMeshBFDProfile: lab-fast"), "{y}");
        assert!(y.contains("receiveInterval: 100\n  transmitInterval: 100\n  detectMultiplier: 3"));
        assert!(y.contains("name: tor2-node3\nspec:\n  node: node3\n  peerIP: 10.10.2.2\n"));
        assert_eq!(y.matches("bfdProfile: lab-fast").count(), 6, "{y}");
        // One ToR, no BFD: the resources of before.
        let one = cluster_yaml(
            &nodes,
            &Shape {
                tors: 1,
                bfd: false,
                ..shape
            },
        );
        assert!(!one.contains("bfd") && !one.contains("BFD"), "{one}");
        assert_eq!(one.matches("kind: BGPPeer").count(), 3, "{one}");
    }
}
