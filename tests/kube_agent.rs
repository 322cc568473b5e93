//! The node agent and the CNI plugin on the `kubernetes` datastore, against a real
//! kube-apiserver (the one `integration/k8s/build.sh` builds) with serval's CRDs and
//! the chart's ServiceAccount and RBAC, every agent speaking with a token the server
//! issued for that ServiceAccount: what the chart grants is what is tested.
//!
//! ```text
//!   p1        p2                                p3          (pods, wired by the CNI plugin)
//!   │         │                                 │
//!   n1 ───┬── n2     cp  .2          tor (BIRD) ─── n3      AS 64512 (mesh),
//!  .11    │  .12     │     .1 ┌──────┘  .1 198.18.1.0/24 .13   eBGP with MD5 to the ToR
//!         └──────────┴────────┘
//!                 192.0.2.0/24
//! ```
//!
//! `cp` holds etcd and kube-apiserver on 192.0.2.2:6443. The test plays the kubelet:
//! it creates the Nodes (labels, InternalIP, serval's and Calico's address
//! annotations) and the pods' network namespaces. The scenario, in phases:
//!
//! 1. mesh and ToR: three agents, each with two mesh sessions and one MD5 session to
//!    BIRD whose password comes from a Secret named in `BGPPeer.password.secretKeyRef`;
//! 2. pods: `serval install-cni` writes each node's CNI kubeconfig from a projected
//!    token, the plugin wires a pod per node, every pod pings every other;
//! 3. ServalNodeStatus: `kubectl get servalnodestatus` shows the sessions and routes;
//! 4. outage: the API server is stopped for 30 s: sessions, routes and pings stay,
//!    `serval node status` and `/readyz` name the outage, and a block claimed after the
//!    restart is routed;
//! 5. compaction: etcd's history is compacted and the API server restarted, so every
//!    watch comes back with a version that is gone (410): the agents list again,
//!    lose no route, and route a block claimed right after;
//! 6. node deletion: the Node n3 is deleted; the holder of the Lease `serval-node-gc`
//!    releases its addresses, blocks and ServalNode, and n1 and n2 drop its routes.
//!
//! The second test is the CNI plugin's token: a kubeconfig whose token the server
//! revoked fails ADD with a Kubernetes error (code 104) until `install-cni --watch`
//! picks up the token the kubelet wrote next.

mod kube_support;
mod node_support;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use node_support::{
    block_of, cni, cni_plugin, has_problem, http, ping, run, serval_bin, three_nodes, KernelRoute,
    Node,
};
use serval_integration::kube::{ApiServer, Credentials};
use serval_integration::{
    scenario, tools, wait_for, wait_until, Asn, BgpDaemon, Bird, Error, NeighborSpec, Netns,
    NsChild, Password, Poll, Result, RouterSpec, TestDir,
};

/// One control plane at a time: each takes a good share of the two cores.
static ONE_CONTROL_PLANE: Mutex<()> = Mutex::new(());

/// The chart's release namespace: the agents' Lease and Secrets are there.
const NAMESPACE: &str = "kube-system";
/// The chart's ServiceAccount (release `serval`).
const SERVICE_ACCOUNT: &str = "serval";
const API_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const API_URL: &str = "https://192.0.2.2:6443";
const TOR_AS: u32 = 65000;
const NODE_AS: u32 = 64512;
const TOR_PASSWORD: &str = "rack-md5-Secret";
/// The agents' log: serval's decisions and the kube store's relists.
const LOG_LEVEL: &str = "info,serval=debug,ipam::store::kube=debug";
/// How long the API server stays away in the outage phase.
const OUTAGE: Duration = Duration::from_secs(30);

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::InvalidSpec(format!("{what} {}: {e}", path.display()))
}

fn addr(s: &str) -> Result<IpAddr> {
    s.parse().map_err(|_| Error::InvalidSpec(s.into()))
}

/// Elapsed time as the phases print it.
fn secs(t: Instant) -> String {
    format!("{:.1}s", t.elapsed().as_secs_f64())
}

/// The API server in `cp` on the nodes' segment, with serval's CRDs established and
/// the chart's ServiceAccount and RBAC applied.
fn control_plane(cp: &Netns, test: &TestDir) -> Result<ApiServer> {
    let t = Instant::now();
    let api = ApiServer::start_in(&cp.handle(), IpAddr::V4(API_ADDR), test.path())?;
    kube_support::install_crds(&api)?;
    api.kubectl_stdin(
        &["apply", "-f", "-"],
        &kube_support::chart_rbac(&api, NAMESPACE, &["bgpPasswordSecrets={bgp-tor}"])?,
    )?;
    eprintln!(
        "control plane {} ready with CRDs and RBAC after {}",
        api.version()?,
        secs(t)
    );
    Ok(api)
}

/// A service-account token directory as the kubelet projects it: `token` and `ca.crt`
/// are links through `..data` to a timestamped directory, and an update swaps `..data`
/// in one rename.
struct ProjectedToken {
    dir: PathBuf,
    generation: u32,
}

impl ProjectedToken {
    fn new(dir: PathBuf) -> Result<ProjectedToken> {
        std::fs::create_dir_all(&dir).map_err(|e| io_err("creating", &dir, e))?;
        Ok(ProjectedToken { dir, generation: 0 })
    }

    /// Writes `token` (and the CA) the kubelet's way.
    fn write(&mut self, token: &str, ca: &Path) -> Result<()> {
        use std::os::unix::fs::symlink;
        self.generation += 1;
        let old = (self.generation > 1).then(|| format!("..gen{}", self.generation - 1));
        let name = format!("..gen{}", self.generation);
        let data = self.dir.join(&name);
        std::fs::create_dir_all(&data).map_err(|e| io_err("creating", &data, e))?;
        std::fs::write(data.join("token"), token).map_err(|e| io_err("writing", &data, e))?;
        std::fs::copy(ca, data.join("ca.crt")).map_err(|e| io_err("copying", ca, e))?;
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        symlink(&name, &tmp).map_err(|e| io_err("linking", &tmp, e))?;
        std::fs::rename(&tmp, self.dir.join("..data")).map_err(|e| io_err("renaming", &tmp, e))?;
        for f in ["token", "ca.crt"] {
            let link = self.dir.join(f);
            if !link.exists() {
                symlink(format!("..data/{f}"), &link).map_err(|e| io_err("linking", &link, e))?;
            }
        }
        if let Some(old) = old {
            let _ = std::fs::remove_dir_all(self.dir.join(old));
        }
        Ok(())
    }
}

/// `serval install-cni` for `node` into `dir` (`bin/`, `net.d/`), the kubeconfig
/// made from the projected token in `sa`. `watch`: keep it running (re-reading every
/// second). Returns the child when watching.
fn install_cni(node: &str, dir: &Path, sa: &Path, watch: bool) -> Result<Option<NsChild>> {
    let plugin = cni_plugin()?;
    std::fs::create_dir_all(dir).map_err(|e| io_err("creating", dir, e))?;
    let d = |f: &str| dir.join(f).display().to_string();
    let serval = serval_bin().display().to_string();
    let plugin = plugin.display().to_string();
    let sa = sa.display().to_string();
    let mut argv = vec![
        serval.as_str(),
        "install-cni",
        "--datastore",
        "kubernetes",
        "--node-name",
        node,
        "--plugin",
        &plugin,
        "--service-account-dir",
        &sa,
        "--api-server",
        API_URL,
        "--chain",
        "",
    ];
    let (bin, conf, log) = (d("bin"), d("net.d"), d("cni.log"));
    argv.extend([
        "--bin-dir",
        &bin,
        "--conf-dir",
        &conf,
        "--host-conf-dir",
        &conf,
        "--log-file",
        &log,
    ]);
    if !watch {
        run(Command::new(argv[0]).args(&argv[1..]))?;
        return Ok(None);
    }
    argv.extend(["--watch", "--interval", "1s"]);
    let child = serval_integration::netns::spawn_here(&argv, Some(&dir.join("install-cni.log")))?;
    Ok(Some(child))
}

/// The network configuration a runtime hands the plugin, from the conflist
/// `install-cni` wrote into `dir/net.d`: serval's entry with the list's name and
/// version, and the node's own files (the conflist names the host's defaults).
fn cni_config(dir: &Path, node_dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join("net.d/10-serval.conflist");
    let text = std::fs::read_to_string(&path).map_err(|e| io_err("reading", &path, e))?;
    let list: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::InvalidSpec(format!("{}: {e}", path.display())))?;
    let mut c = list["plugins"][0].clone();
    c["name"] = list["name"].clone();
    c["cniVersion"] = list["cniVersion"].clone();
    c["mtu_file"] = serde_json::json!(node_dir.join("mtu"));
    c["ready_file"] = serde_json::json!(node_dir.join("ready"));
    c["ipam_lock_file"] = serde_json::json!(node_dir.join("ipam.lock"));
    c["log_file_path"] = serde_json::json!(node_dir.join("cni.log"));
    Ok(c)
}

/// The Nodes as a kubelet registers them: n1 by its InternalIP only, n2 with
/// serval's address annotation, n3 with Calico's (and an InternalIP no interface
/// carries: the annotation must win).
const NODES: &str = "\
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {rack: a, kubernetes.io/hostname: n1}}
---
apiVersion: v1
kind: Node
metadata:
  name: n2
  labels: {rack: a, kubernetes.io/hostname: n2}
  annotations: {serval.dev/ipv4-address: 192.0.2.12/24}
---
apiVersion: v1
kind: Node
metadata:
  name: n3
  labels: {rack: b, kubernetes.io/hostname: n3}
  annotations: {projectcalico.org/IPv4Address: 198.18.1.13/24}
";

const INTERNAL_IPS: [(&str, &str); 3] = [
    ("n1", "192.0.2.11"),
    ("n2", "192.0.2.12"),
    ("n3", "203.0.113.13"),
];

/// The cluster's configuration, as an administrator applies it.
fn cluster_yaml() -> String {
    let mut y = format!(
        "\
apiVersion: v1
kind: Secret
metadata: {{name: bgp-tor, namespace: {NAMESPACE}}}
stringData: {{password: {TOR_PASSWORD}}}
---
apiVersion: serval.dev/v1
kind: IPPool
metadata: {{name: pods}}
spec: {{cidr: 10.65.0.0/16, blockSize: 26, vxlanMode: CrossSubnet, ipipMode: Never}}
---
apiVersion: serval.dev/v1
kind: BGPPeer
metadata: {{name: tor-rack-a}}
spec:
  nodeSelector: rack == 'a'
  peerIP: 192.0.2.1
  asNumber: {TOR_AS}
  password: {{secretKeyRef: {{name: bgp-tor, key: password}}}}
---
apiVersion: serval.dev/v1
kind: BGPPeer
metadata: {{name: tor-rack-b}}
spec:
  nodeSelector: rack == 'b'
  peerIP: 198.18.1.1
  asNumber: {TOR_AS}
  password: {{secretKeyRef: {{name: bgp-tor, key: password}}}}
"
    );
    for n in ["n1", "n2", "n3"] {
        y.push_str(&format!(
            "---\napiVersion: serval.dev/v1\nkind: ServalNodeStatus\nmetadata: {{name: {n}}}\n\
             spec: {{node: {n}, classes: [Agent, BGP, Routes], updatePeriodSeconds: 5}}\n"
        ));
    }
    y
}

/// `kubectl get KIND -o json` items.
fn items(api: &ApiServer, kind: &str) -> Result<Vec<serde_json::Value>> {
    let out = api.kubectl(&["get", kind, "-o", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| Error::InvalidSpec(format!("kubectl get {kind}: {e}")))?;
    Ok(v["items"].as_array().cloned().unwrap_or_default())
}

/// What of node `name` is left in the IPAM objects, one line each.
fn ipam_objects_of(api: &ApiServer, node: &str, handle_part: &str) -> Result<Vec<String>> {
    let mut left = Vec::new();
    for a in items(api, "blockaffinities")? {
        if a["spec"]["node"] == node {
            left.push(format!("blockaffinity {}", a["metadata"]["name"]));
        }
    }
    for b in items(api, "ipamblocks")? {
        if b["spec"]["affinity"] == node {
            left.push(format!("ipamblock {}", b["metadata"]["name"]));
        }
    }
    for h in items(api, "ipamhandles")? {
        if h["spec"]["handleId"]
            .as_str()
            .is_some_and(|id| id.contains(handle_part))
        {
            left.push(format!("ipamhandle {}", h["metadata"]["name"]));
        }
    }
    for s in items(api, "servalnodes")? {
        if s["metadata"]["name"] == node {
            left.push(format!("servalnode {node}"));
        }
    }
    Ok(left)
}

/// Waits until `n` routes `prefix` the way `check` wants.
fn wait_route_like(
    n: &Node,
    prefix: &str,
    within: Duration,
    check: impl Fn(&KernelRoute) -> bool,
) -> Result<()> {
    wait_until(
        within,
        &format!("{}: route for {prefix}", n.name),
        || match n.routes() {
            Ok(r) if r.iter().any(|x| x.0 == prefix && check(x)) => Poll::Ready(()),
            Ok(r) => Poll::Pending(format!("{r:?}")),
            Err(e) => Poll::Pending(e.to_string()),
        },
    )
}

/// Every pod pings every other.
fn ping_all(nodes: &[&Node]) -> Result<()> {
    for from in nodes {
        for to in nodes {
            if from.name == to.name {
                continue;
            }
            let ip = to
                .pod_ip
                .ok_or_else(|| Error::InvalidSpec(format!("no pod on {}", to.name)))?;
            let out = ping(&from.pod, ip)?;
            if !out.contains(" 0% packet loss") {
                return Err(Error::Check(format!("{} → {}: {out}", from.name, to.name)));
            }
        }
    }
    Ok(())
}

/// `serval ipam assign` as an administrator (the admin kubeconfig), run in `n`'s
/// namespace: a block claimed for `node` around `ip`.
fn assign(api: &ApiServer, n: &Node, node: &str, handle: &str, ip: &str) -> Result<String> {
    let kc = api.admin_kubeconfig().display().to_string();
    let bin = serval_bin().display().to_string();
    n.ns.exec(&[
        "env",
        &format!("KUBECONFIG={kc}"),
        &bin,
        "ipam",
        "assign",
        "--node",
        node,
        "--handle",
        handle,
        "--ip",
        ip,
        "--datastore",
        "kubernetes",
    ])
}

fn log_of(n: &Node) -> String {
    std::fs::read_to_string(n.dir.join("agent.log")).unwrap_or_default()
}

/// How many times the agent's log says a watch came back with a version the server
/// no longer has.
fn relists(n: &Node) -> usize {
    log_of(n)
        .lines()
        .filter(|l| l.contains("410 Gone") || l.contains("too old resource version"))
        .count()
}

fn peers_of(s: &serde_json::Value) -> Vec<serde_json::Value> {
    s["peers"].as_array().cloned().unwrap_or_default()
}

/// Two mesh sessions and the ToR session Established.
fn all_sessions_up(s: &serde_json::Value, tor: &str) -> bool {
    let p = peers_of(s);
    p.len() == 3
        && p.iter().all(|p| p["state"] == "Established")
        && p.iter().filter(|p| p["type"] == "mesh").count() == 2
        && p.iter().any(|p| p["address"] == tor)
}

fn tor_of(n: &Node) -> &'static str {
    if n.name == "n3" {
        "198.18.1.1"
    } else {
        "192.0.2.1"
    }
}

#[test]
fn agents_on_kubernetes_mesh_report_survive_outages_and_collect_deleted_nodes() {
    let _one = ONE_CONTROL_PLANE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    scenario("kube-agent", |test| {
        tools::require_all(&["ip", "ping", "curl", "bird", "birdc", "openssl"])?;
        let started = Instant::now();
        let (nodes, tor, mut segment) = three_nodes(test)?;
        let [mut n1, mut n2, mut n3] = nodes;
        let cp = Netns::new()?;
        segment.connect(&cp, "eth0")?;
        cp.add_addr(
            "eth0",
            "192.0.2.2/24"
                .parse()
                .map_err(|_| Error::InvalidSpec("cp".into()))?,
        )?;
        cp.add_default_route(addr("192.0.2.1")?)?;
        let mut api = control_plane(&cp, test)?;

        // The ToR: BIRD, one eBGP session per node with the password of the Secret.
        let password = Password::new(TOR_PASSWORD)?;
        let mut spec = RouterSpec::new(Asn(TOR_AS), Ipv4Addr::new(192, 0, 2, 1));
        for (node, local) in [
            ("192.0.2.11", "192.0.2.1"),
            ("192.0.2.12", "192.0.2.1"),
            ("198.18.1.13", "198.18.1.1"),
        ] {
            spec = spec.neighbor(
                NeighborSpec::new(addr(node)?, Asn(NODE_AS))
                    .local(addr(local)?)
                    .password(password.clone()),
            );
        }
        let bird = Bird::start(&tor, test, spec)?;

        // What the kubelet and the administrator write.
        api.kubectl_stdin(&["apply", "-f", "-"], NODES)?;
        for (node, ip) in INTERNAL_IPS {
            let status = serde_json::json!({"status": {"addresses": [
                {"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": node}]}});
            api.kubectl(&[
                "patch",
                "node",
                node,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status.to_string(),
            ])?;
        }
        api.kubectl_stdin(&["apply", "-f", "-"], &cluster_yaml())?;

        // Phase 1 — mesh and ToR: the agents speak as the chart's ServiceAccount, each
        // with a token bound to its pod on its node, under the chart's admission policy.
        let t = Instant::now();
        for n in [&mut n1, &mut n2, &mut n3] {
            let kubeconfig = api.node_agent_kubeconfig(
                NAMESPACE,
                SERVICE_ACCOUNT,
                &n.name,
                Duration::from_secs(3600),
            )?;
            let kc = kubeconfig.display().to_string();
            let env = [("KUBECONFIG", kc.as_str()), ("SERVAL_NAMESPACE", NAMESPACE)];
            n.start_with_env("kubernetes", &env, LOG_LEVEL)?;
        }
        let want_addr = [
            ("n1", "192.0.2.11/24"),
            ("n2", "192.0.2.12/24"),
            ("n3", "198.18.1.13/24"),
        ];
        for n in [&n1, &n2, &n3] {
            let s = wait_for(
                Duration::from_secs(60),
                &format!("{}: two mesh sessions and the ToR's Established", n.name),
                || n.status(),
                |s| s["ready"] == true && all_sessions_up(s, tor_of(n)),
            )
            .map_err(|e| Error::Check(format!("{e}\n{}", log_of(n))))?;
            let want = want_addr
                .iter()
                .find(|(m, _)| *m == n.name)
                .map(|(_, a)| *a);
            assert_eq!(
                s["ipv4_address"].as_str(),
                want,
                "{}: address from its Node",
                n.name
            );
            assert!(
                s["problems"].as_array().is_none_or(Vec::is_empty),
                "{}: {}",
                n.name,
                s["problems"]
            );
        }
        for a in ["192.0.2.11", "192.0.2.12", "198.18.1.13"] {
            bird.wait_established(addr(a)?, Duration::from_secs(30))?;
        }
        let conf = std::fs::read_to_string(test.path().join("bird-192.0.2.1/bird.conf"))
            .unwrap_or_default();
        eprintln!(
            "phase 1 (mesh and MD5 sessions to BIRD) after {}; BIRD config has the password: {}",
            secs(t),
            conf.contains(TOR_PASSWORD)
        );

        // Phase 2 — pods wired by the CNI plugin with the kubeconfig install-cni writes.
        let t = Instant::now();
        for n in [&mut n1, &mut n2, &mut n3] {
            let token = api.pod_token(
                NAMESPACE,
                SERVICE_ACCOUNT,
                &format!("{SERVICE_ACCOUNT}-{}", n.name),
                Duration::from_secs(3600),
            )?;
            let mut sa = ProjectedToken::new(n.dir.join("serviceaccount"))?;
            sa.write(&token, api.ca())?;
            let cni_dir = n.dir.join("cni");
            install_cni(&n.name, &cni_dir, &sa.dir, false)?;
            let config = cni_config(&cni_dir, &n.dir)?;
            let pod = format!("p-{}", n.name);
            n.add_pod_cni(&config, &pod)?;
        }
        let pod_block = |n: &Node| n.pod_ip.map(block_of).unwrap_or_default();
        let blocks = [pod_block(&n1), pod_block(&n2), pod_block(&n3)];
        for n in [&n1, &n2, &n3] {
            for (owner, block) in ["n1", "n2", "n3"].iter().zip(&blocks) {
                let cross = (n.name == "n3") != (*owner == "n3");
                wait_route_like(n, block, Duration::from_secs(30), |(_, gw, dev)| {
                    if *owner == n.name {
                        gw.is_none() && dev.is_none()
                    } else if cross {
                        dev.as_deref() == Some("vxlan.serval")
                    } else {
                        dev.as_deref() == Some("eth0") && gw.is_some()
                    }
                })?;
            }
        }
        ping_all(&[&n1, &n2, &n3])?;
        eprintln!(
            "phase 2 (pods by CNI, {blocks:?}, every pod pings every other) after {}",
            secs(t)
        );

        // Phase 3 — each ServalNodeStatus shows the node's sessions and routes.
        let t = Instant::now();
        for n in [&n1, &n2, &n3] {
            let status = wait_for(
                Duration::from_secs(30),
                &format!("ServalNodeStatus {} with three sessions", n.name),
                || {
                    let out = api.kubectl(&[
                        "get",
                        "servalnodestatus",
                        &n.name,
                        "-o",
                        "json",
                        "--show-managed-fields",
                    ])?;
                    serde_json::from_str::<serde_json::Value>(&out)
                        .map_err(|e| Error::InvalidSpec(format!("{e}: {out}")))
                },
                |o| {
                    let bgp = &o["status"]["bgp"];
                    let routes = o["status"]["routes"]["routesV4"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    bgp["numberEstablishedV4"] == 3
                        && bgp["peersV4"].as_array().is_some_and(|p| {
                            p.iter()
                                .any(|p| p["peerIP"] == tor_of(n) && p["state"] == "Established")
                        })
                        && blocks
                            .iter()
                            .all(|b| routes.iter().any(|r| r["destination"] == *b))
                },
            )?;
            assert_eq!(status["status"]["agent"]["state"], "Ready", "{}", n.name);
            let managers = status["metadata"]["managedFields"].to_string();
            assert!(managers.contains("serval-agent"), "{}: {managers}", n.name);
        }
        eprintln!(
            "phase 3 (ServalNodeStatus through kubectl) after {}",
            secs(t)
        );

        // Phase 4 — the API server is away for 30 s.
        let t = Instant::now();
        let routes_before = [n1.routes()?, n2.routes()?, n3.routes()?];
        api.stop_apiserver()?;
        let down = Instant::now();
        for n in [&n1, &n2, &n3] {
            let s = wait_for(
                Duration::from_secs(20),
                &format!("{}: the outage in its status", n.name),
                || n.status(),
                |s| has_problem(s, "datastore"),
            )?;
            if n.name == "n1" {
                eprintln!("n1 with the API server away: {}", s["problems"]);
            }
            let (code, body) = http(&n.ns, "/readyz")?;
            assert_eq!(code, 503, "{}: /readyz during the outage: {body}", n.name);
            assert!(body.contains("datastore"), "{}: /readyz: {body}", n.name);
        }
        let text = run(Command::new(serval_bin()).args([
            "node",
            "status",
            "--socket",
            &n1.socket().display().to_string(),
        ]))?;
        assert!(
            text.contains("datastore"),
            "serval node status names the outage: {text}"
        );
        let mut rounds = 0;
        while down.elapsed() < OUTAGE {
            for (n, before) in [&n1, &n2, &n3].iter().zip(&routes_before) {
                assert_eq!(
                    &n.routes()?,
                    before,
                    "{}: routes kept during the outage",
                    n.name
                );
                let s = n.status()?;
                assert!(
                    all_sessions_up(&s, tor_of(n)),
                    "{}: sessions kept: {s}",
                    n.name
                );
            }
            ping_all(&[&n1, &n2, &n3])?;
            rounds += 1;
        }
        api.start_apiserver()?;
        let back = Instant::now();
        for n in [&n1, &n2, &n3] {
            wait_for(
                Duration::from_secs(60),
                &format!("{}: outage cleared", n.name),
                || n.status(),
                |s| !has_problem(s, "datastore") && s["ready"] == true,
            )?;
            assert_eq!(http(&n.ns, "/readyz")?.0, 200, "{}", n.name);
        }
        let cleared = back.elapsed();
        // Read afresh as soon as the server answers, not after the watch's back-off.
        assert!(
            cleared < Duration::from_secs(15),
            "the outage cleared only {cleared:?} after the restart"
        );
        // A block claimed once the server is back is routed everywhere.
        assign(&api, &n2, "n2", "after-outage", "10.65.99.1")?;
        wait_route_like(&n1, "10.65.99.0/26", Duration::from_secs(30), |r| {
            r.1.as_deref() == Some("192.0.2.12")
        })?;
        wait_route_like(&n3, "10.65.99.0/26", Duration::from_secs(30), |r| {
            r.2.as_deref() == Some("vxlan.serval")
        })?;
        eprintln!(
            "phase 4 (30 s outage, {rounds} rounds of checks, cleared {cleared:.1?} after the restart) after {}",
            secs(t)
        );

        // Phase 5 — etcd compacted: every watch comes back to a version that is gone.
        let t = Instant::now();
        let seen = [relists(&n1), relists(&n2), relists(&n3)];
        let routes_before = [n1.routes()?, n2.routes()?, n3.routes()?];
        let revision = api.compact_etcd()?;
        api.stop_apiserver()?;
        api.start_apiserver()?;
        let restarted = t.elapsed();
        for (n, before) in [&n1, &n2, &n3].iter().zip(seen) {
            wait_until(
                Duration::from_secs(60),
                &format!("{}: a relist after the compaction", n.name),
                || {
                    let now = relists(n);
                    if now > before {
                        Poll::Ready(())
                    } else {
                        Poll::Pending(format!("{now} relists"))
                    }
                },
            )?;
        }
        let relisted = t.elapsed();
        for (n, before) in [&n1, &n2, &n3].iter().zip(&routes_before) {
            let now = n.routes()?;
            let lost: Vec<_> = before.iter().filter(|r| !now.contains(r)).collect();
            assert!(
                lost.is_empty(),
                "{}: routes lost across the relist: {lost:?}",
                n.name
            );
        }
        assign(&api, &n1, "n1", "after-compaction", "10.65.98.1")?;
        wait_route_like(&n2, "10.65.98.0/26", Duration::from_secs(30), |r| {
            r.1.as_deref() == Some("192.0.2.11")
        })?;
        wait_route_like(&n3, "10.65.98.0/26", Duration::from_secs(30), |r| {
            r.2.as_deref() == Some("vxlan.serval")
        })?;
        ping_all(&[&n1, &n2, &n3])?;
        eprintln!(
            "phase 5 (etcd compacted at revision {revision}, API server back after {restarted:.1?}, \
             every agent relisted after {relisted:.1?}) after {}",
            secs(t)
        );

        // Phase 6 — the Node n3 is deleted: the collector releases what n3 held.
        let t = Instant::now();
        let holder = api.kubectl(&[
            "-n",
            NAMESPACE,
            "get",
            "lease",
            "serval-node-gc",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])?;
        let held = ipam_objects_of(&api, "n3", "ctr-p-n3")?;
        assert!(
            held.len() >= 4,
            "n3 holds an affinity, a block, a handle and its ServalNode: {held:?}"
        );
        api.kubectl(&["delete", "node", "n3"])?;
        let left = wait_for(
            Duration::from_secs(60),
            "n3's addresses, blocks and ServalNode released",
            || ipam_objects_of(&api, "n3", "ctr-p-n3"),
            Vec::is_empty,
        );
        let collected = t.elapsed();
        if let Err(e) = left {
            return Err(Error::Check(format!(
                "{e}\nlease holder {holder}:\n{}",
                [&n1, &n2, &n3]
                    .iter()
                    .map(|n| log_of(n))
                    .collect::<Vec<_>>()
                    .join("\n")
            )));
        }
        for n in [&n1, &n2] {
            node_support::wait_route(
                n,
                &blocks[2],
                false,
                Instant::now(),
                Duration::from_secs(30),
            )?;
            node_support::wait_route(
                n,
                "10.65.99.0/26",
                true,
                Instant::now(),
                Duration::from_secs(1),
            )?;
        }
        wait_for(
            Duration::from_secs(30),
            "n3: says it was deleted",
            || n3.status(),
            |s| has_problem(s, "was deleted while this agent runs"),
        )?;
        ping_all(&[&n1, &n2])?;
        let collector = [&n1, &n2, &n3]
            .iter()
            .find(|n| log_of(n).contains("released a deleted node's addresses and blocks"))
            .map(|n| n.name.clone());
        assert_eq!(
            collector.as_deref(),
            Some(holder.trim()),
            "the Lease holder collected"
        );
        eprintln!(
            "phase 6 (Node n3 deleted, collected by {holder} after {collected:.1?}) after {}",
            secs(t)
        );
        eprintln!("whole scenario: {}", secs(started));
        Ok(())
    });
}

#[test]
fn cni_keeps_working_when_its_token_is_revoked_and_rotated() {
    let _one = ONE_CONTROL_PLANE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    scenario("kube-cni-token", |test| {
        tools::require_all(&["ip", "openssl"])?;
        let started = Instant::now();
        let node = Netns::new()?;
        let cp = Netns::new()?;
        let mut segment = serval_integration::Bridge::new()?;
        segment.connect(&node, "eth0")?;
        segment.connect(&cp, "eth0")?;
        let net = |s: &str| s.parse().map_err(|_| Error::InvalidSpec(s.into()));
        node.add_addr("eth0", net("192.0.2.11/24")?)?;
        cp.add_addr("eth0", net("192.0.2.2/24")?)?;
        let api = control_plane(&cp, test)?;
        api.kubectl_stdin(
            &["apply", "-f", "-"],
            "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n",
        )?;
        api.kubectl_stdin(
            &["apply", "-f", "-"],
            "apiVersion: serval.dev/v1\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 10.66.0.0/16, blockSize: 26}\n",
        )?;

        // The kubelet's first token, bound to the agent's pod on n1: deleting the pod
        // revokes it.
        let bound_token = |pod: &str| -> Result<String> {
            api.pod_on_node(NAMESPACE, SERVICE_ACCOUNT, pod, "n1")?;
            api.pod_token(NAMESPACE, SERVICE_ACCOUNT, pod, Duration::from_secs(3600))
        };
        let first = bound_token("cni-token-1")?;
        let dir = test.subdir("n1")?;
        let mut sa = ProjectedToken::new(dir.join("serviceaccount"))?;
        sa.write(&first, api.ca())?;
        let cni_dir = dir.join("cni");
        let _watch = install_cni("n1", &cni_dir, &sa.dir, true)?;
        let kubeconfig = cni_dir.join("net.d").join("serval-kubeconfig");
        wait_until(Duration::from_secs(20), "install-cni's first pass", || {
            match std::fs::read_to_string(&kubeconfig) {
                Ok(k)
                    if k.contains(&first) && cni_dir.join("net.d/10-serval.conflist").exists() =>
                {
                    Poll::Ready(())
                }
                Ok(_) => Poll::Pending("another token".into()),
                Err(e) => Poll::Pending(e.to_string()),
            }
        })?;
        let config = cni_config(&cni_dir, &dir)?;
        let pods: Vec<Netns> = (0..3).map(|_| Netns::new()).collect::<Result<_>>()?;
        let add = |i: usize| {
            cni(
                &node,
                "ADD",
                &format!("ctr-{i}"),
                &pods[i],
                ("default", &format!("pod-{i}")),
                &config,
            )
        };
        let a = add(0)?;
        assert!(a.ok, "ADD with the first token: {} {}", a.result, a.stderr);

        // The bound object goes: the server refuses the token at once.
        let t = Instant::now();
        // Forced: no kubelet confirms a graceful deletion.
        api.kubectl(&[
            "-n",
            NAMESPACE,
            "delete",
            "pod",
            "cni-token-1",
            "--grace-period=0",
            "--force",
        ])?;
        let as_cni = api.dir().join("as-cni.kubeconfig");
        api.write_kubeconfig(&as_cni, &Credentials::Token(first.clone()))?;
        wait_until(
            Duration::from_secs(30),
            "the first token to be refused",
            || match api.kubectl_as(
                &as_cni,
                &["get", "node", "n1", "--request-timeout=5s"],
                None,
            ) {
                Err(Error::Command { stderr, .. }) if stderr.contains("Unauthorized") => {
                    Poll::Ready(())
                }
                other => Poll::Pending(format!("{other:?}")),
            },
        )?;
        let refused_after = t.elapsed();
        let b = add(1)?;
        assert!(!b.ok, "ADD with a revoked token succeeded: {}", b.result);
        assert_eq!(b.result["code"], 104, "a Kubernetes error: {}", b.result);
        let said = format!("{} {}", b.result["msg"], b.result["details"]);
        assert!(
            said.contains("Unauthorized") || said.contains("401"),
            "names the refusal: {said}"
        );
        eprintln!("revoked token refused after {refused_after:.1?}; ADD said: {said}");

        // The kubelet writes the next token; install-cni rewrites the kubeconfig.
        let second = bound_token("cni-token-2")?;
        let t = Instant::now();
        sa.write(&second, api.ca())?;
        wait_until(
            Duration::from_secs(10),
            "install-cni to take the new token",
            || match std::fs::read_to_string(&kubeconfig) {
                Ok(k) if k.contains(&second) => Poll::Ready(()),
                Ok(_) => Poll::Pending("still the old token".into()),
                Err(e) => Poll::Pending(e.to_string()),
            },
        )?;
        let picked_up = t.elapsed();
        let b = add(1)?;
        assert!(b.ok, "ADD after the rotation: {} {}", b.result, b.stderr);
        let c = add(2)?;
        assert!(c.ok, "another ADD: {} {}", c.result, c.stderr);
        let del = cni(
            &node,
            "DEL",
            "ctr-0",
            &pods[0],
            ("default", "pod-0"),
            &config,
        )?;
        assert!(del.ok, "DEL: {} {}", del.result, del.stderr);
        eprintln!(
            "new token in the kubeconfig {picked_up:.1?} after the kubelet wrote it; whole test {}",
            secs(started)
        );
        Ok(())
    });
}
