//! The lab's network: namespaces for the top-of-rack router, the nodes, their pods and an
//! "outside" host, wired with veths and bridges; on the kubernetes datastore also one for
//! the control plane (etcd and kube-apiserver), behind the ToR like a management subnet.
//! Everything is named `svlab-…` so that `serval lab down` finds it again, also after a
//! crash.
//!
//! ```text
//!                      svlab-ext  10.10.99.10  (outside: routes only 10.10.0.0/16 back)
//!                          │
//!                          │       svlab-kube  10.10.100.10:6443 (--datastore kubernetes)
//!                          │      ╱
//!                      svlab-tor  BIRD or FRR, AS 65000, one bridge per subnet
//!            ┌─────────────┴──────────────┐
//!       br1 10.10.1.1/24              br2 10.10.2.1/24
//!        │         │                      │
//!   svlab-node1 svlab-node2          svlab-node3 …         AS 64512, iBGP mesh,
//!   10.10.1.11  10.10.1.12           10.10.2.11            eBGP to the ToR
//!        │
//!   svlab-node1-pod1 … (wired by the CNI plugin)
//! ```
//!
//! With `--tors 2` the subnets become a switch of their own (`svlab-sw`, one bridge per
//! subnet) on which both routers sit, as a rack's two leaf routers share its VLANs; every
//! node peers with both (`.1` and `.2` of its subnet) and learns the other subnets and the
//! outside segment from both, as a multipath route. The outside host runs BIRD itself,
//! learns the nodes' subnets and the pod blocks from both routers and installs them as
//! multipath routes; BFD on its two sessions takes a dead router's paths out within the
//! detection time.
//!
//! ```text
//!                 svlab-ext  10.10.99.10  BIRD, AS 65100, multipath over both ToRs
//!                     │ br-ext 10.10.99.0/24
//!            ┌────────┴─────────┐
//!      svlab-tor .1        svlab-tor2 .2      BIRD, AS 65000 each, BFD to every peer
//!            │  10.10.s.1       │  10.10.s.2
//!            └────────┬─────────┘
//!                 svlab-sw   br1, br2 … (plain L2: one bridge per subnet)
//!            ┌────────┴───────────────────┐
//!       svlab-node1 svlab-node2       svlab-node3 …     each peers with both ToRs
//! ```

use anyhow::{bail, Context};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

pub const PREFIX: &str = "svlab-";
pub const TOR: &str = "svlab-tor";
pub const EXT: &str = "svlab-ext";
pub const EXT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 10, 99, 10);
pub const TOR_EXT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 10, 99, 1);
pub const TOR_AS: u32 = 65000;
/// The control plane's namespace and its segment to the ToR (kubernetes datastore).
pub const KUBE: &str = "svlab-kube";
pub const KUBE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 10, 100, 10);
pub const TOR_KUBE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 10, 100, 1);
pub const NODE_AS: u32 = 64512;
/// With two ToRs: the subnets' switch, and the outside host's own AS and bridge.
pub const SWITCH: &str = "svlab-sw";
pub const EXT_AS: u32 = 65100;
pub const EXT_BRIDGE: &str = "br-ext";

/// The namespace of ToR `k` (1-based): `svlab-tor`, `svlab-tor2`, …
pub fn tor_netns(k: u8) -> String {
    if k <= 1 {
        TOR.to_string()
    } else {
        format!("{TOR}{k}")
    }
}

/// ToR `k`'s address on the outside segment (10.10.99.k).
pub fn tor_ext_addr(k: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 10, 99, k)
}

/// ToR `k`'s address on a subnet (10.10.s.k): the first is the nodes' gateway.
pub fn tor_addr(subnet: u8, k: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 10, subnet, k)
}

/// One node of the lab.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LabNode {
    pub name: String,
    pub netns: String,
    /// 1-based subnet number: the node sits on 10.10.<subnet>.0/24.
    pub subnet: u8,
    pub address: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

pub fn node_name(i: usize) -> String {
    format!("node{i}")
}

pub fn pod_netns(node: &str, j: usize) -> String {
    format!("{PREFIX}{node}-pod{j}")
}

/// Spread `nodes` over `subnets`: the first subnet gets the extra ones.
pub fn plan(nodes: usize, subnets: usize) -> anyhow::Result<Vec<LabNode>> {
    if nodes == 0 || subnets == 0 || subnets > nodes || subnets > 9 || nodes > 60 {
        bail!("--nodes {nodes} --subnets {subnets}: need 1 ≤ subnets ≤ nodes, at most 9 subnets and 60 nodes");
    }
    let mut out = Vec::new();
    let mut per_subnet = vec![0u8; subnets];
    for i in 0..nodes {
        // Round-robin keeps every subnet populated; sorting by subnet keeps names readable.
        let s = if i < subnets {
            i
        } else {
            (i - subnets) % subnets
        };
        per_subnet[s] += 1;
        let subnet = (s + 1) as u8;
        out.push((subnet, per_subnet[s]));
    }
    out.sort();
    Ok(out
        .into_iter()
        .enumerate()
        .map(|(i, (subnet, k))| LabNode {
            name: node_name(i + 1),
            netns: format!("{PREFIX}{}", node_name(i + 1)),
            subnet,
            address: Ipv4Addr::new(10, 10, subnet, 10 + k),
            gateway: Ipv4Addr::new(10, 10, subnet, 1),
        })
        .collect())
}

/// Run `ip` (or any command) in a namespace, failing with its stderr.
pub fn run(netns: Option<&str>, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]);
            c.args(args);
            c
        }
        None => {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        }
    };
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{}{}: {}",
            netns.map(|n| format!("[{n}] ")).unwrap_or_default(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let mut v = vec!["ip"];
    v.extend_from_slice(args);
    run(None, &v).map(|_| ())
}

pub fn ns_exec(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    run(Some(ns), args)
}

pub fn add_netns(name: &str) -> anyhow::Result<()> {
    ip(&["netns", "add", name])?;
    ns_exec(name, &["ip", "link", "set", "lo", "up"])?;
    Ok(())
}

/// Namespaces of a lab, up or half-built.
pub fn existing() -> Vec<String> {
    let Ok(out) = run(None, &["ip", "netns", "list"]) else {
        return Vec::new();
    };
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_string)
        .collect()
}

/// Build the ToR(s), the outside host and the nodes (pods come later, from the CNI plugin).
pub fn build(nodes: &[LabNode], tors: u8) -> anyhow::Result<()> {
    if tors > 1 {
        return build_with_switch(nodes, tors);
    }
    add_netns(TOR)?;
    ns_exec(TOR, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    add_netns(EXT)?;
    // The outside host: reachable from the node subnets, knows nothing of pod addresses.
    ip(&[
        "link", "add", "ext0", "netns", EXT, "type", "veth", "peer", "name", "tor-ext", "netns",
        TOR,
    ])?;
    ns_exec(
        EXT,
        &[
            "ip",
            "addr",
            "add",
            &format!("{EXT_ADDR}/24"),
            "dev",
            "ext0",
        ],
    )?;
    ns_exec(EXT, &["ip", "link", "set", "ext0", "up"])?;
    ns_exec(
        EXT,
        &[
            "ip",
            "route",
            "add",
            "10.10.0.0/16",
            "via",
            &TOR_EXT_ADDR.to_string(),
        ],
    )?;
    ns_exec(
        TOR,
        &[
            "ip",
            "addr",
            "add",
            &format!("{TOR_EXT_ADDR}/24"),
            "dev",
            "tor-ext",
        ],
    )?;
    ns_exec(TOR, &["ip", "link", "set", "tor-ext", "up"])?;
    let mut subnets: Vec<u8> = nodes.iter().map(|n| n.subnet).collect();
    subnets.dedup();
    for s in &subnets {
        let br = format!("br{s}");
        ns_exec(TOR, &["ip", "link", "add", &br, "type", "bridge"])?;
        ns_exec(
            TOR,
            &["ip", "addr", "add", &format!("10.10.{s}.1/24"), "dev", &br],
        )?;
        ns_exec(TOR, &["ip", "link", "set", &br, "up"])?;
    }
    for n in nodes {
        add_netns(&n.netns)?;
        let tor_side = format!("to-{}", n.name);
        ip(&[
            "link", "add", "eth0", "netns", &n.netns, "type", "veth", "peer", "name", &tor_side,
            "netns", TOR,
        ])?;
        ns_exec(
            TOR,
            &[
                "ip",
                "link",
                "set",
                &tor_side,
                "master",
                &format!("br{}", n.subnet),
                "up",
            ],
        )?;
        ns_exec(
            &n.netns,
            &[
                "ip",
                "addr",
                "add",
                &format!("{}/24", n.address),
                "dev",
                "eth0",
            ],
        )?;
        ns_exec(&n.netns, &["ip", "link", "set", "eth0", "up"])?;
        ns_exec(
            &n.netns,
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &n.gateway.to_string(),
            ],
        )?;
        ns_exec(&n.netns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    }
    Ok(())
}

/// Several ToRs on one switch (see the module's second drawing).
fn build_with_switch(nodes: &[LabNode], tors: u8) -> anyhow::Result<()> {
    add_netns(EXT)?;
    ns_exec(EXT, &["ip", "link", "add", EXT_BRIDGE, "type", "bridge"])?;
    let ext_addr = format!("{EXT_ADDR}/24");
    ns_exec(EXT, &["ip", "addr", "add", &ext_addr, "dev", EXT_BRIDGE])?;
    ns_exec(EXT, &["ip", "link", "set", EXT_BRIDGE, "up"])?;
    add_netns(SWITCH)?;
    let mut subnets: Vec<u8> = nodes.iter().map(|n| n.subnet).collect();
    subnets.dedup();
    for s in &subnets {
        let br = format!("br{s}");
        ns_exec(SWITCH, &["ip", "link", "add", &br, "type", "bridge"])?;
        ns_exec(SWITCH, &["ip", "link", "set", &br, "up"])?;
    }
    for k in 1..=tors {
        let ns = tor_netns(k);
        add_netns(&ns)?;
        ns_exec(&ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let ext_side = format!("ext-tor{k}");
        ip(&[
            "link", "add", "tor-ext", "netns", &ns, "type", "veth", "peer", "name", &ext_side,
            "netns", EXT,
        ])?;
        ns_exec(
            EXT,
            &["ip", "link", "set", &ext_side, "master", EXT_BRIDGE, "up"],
        )?;
        let addr = format!("{}/24", tor_ext_addr(k));
        ns_exec(&ns, &["ip", "addr", "add", &addr, "dev", "tor-ext"])?;
        ns_exec(&ns, &["ip", "link", "set", "tor-ext", "up"])?;
        for s in &subnets {
            let leg = format!("sub{s}");
            let sw_side = format!("tor{k}-s{s}");
            ip(&[
                "link", "add", &leg, "netns", &ns, "type", "veth", "peer", "name", &sw_side,
                "netns", SWITCH,
            ])?;
            let br = format!("br{s}");
            ns_exec(
                SWITCH,
                &["ip", "link", "set", &sw_side, "master", &br, "up"],
            )?;
            let addr = format!("{}/24", tor_addr(*s, k));
            ns_exec(&ns, &["ip", "addr", "add", &addr, "dev", &leg])?;
            ns_exec(&ns, &["ip", "link", "set", &leg, "up"])?;
        }
    }
    for n in nodes {
        add_netns(&n.netns)?;
        let sw_side = format!("to-{}", n.name);
        ip(&[
            "link", "add", "eth0", "netns", &n.netns, "type", "veth", "peer", "name", &sw_side,
            "netns", SWITCH,
        ])?;
        let br = format!("br{}", n.subnet);
        ns_exec(
            SWITCH,
            &["ip", "link", "set", &sw_side, "master", &br, "up"],
        )?;
        let addr = format!("{}/24", n.address);
        ns_exec(&n.netns, &["ip", "addr", "add", &addr, "dev", "eth0"])?;
        ns_exec(&n.netns, &["ip", "link", "set", "eth0", "up"])?;
        // The first ToR is the default gateway; the outside segment and the other subnets
        // come from both ToRs over BGP, as multipath routes that lose a dead ToR's path.
        let gw = n.gateway.to_string();
        ns_exec(&n.netns, &["ip", "route", "add", "default", "via", &gw])?;
        ns_exec(&n.netns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    }
    Ok(())
}

/// The control plane's namespace, on its own segment behind the ToR: the nodes reach it
/// through their default route, as they would a management network.
pub fn build_control_plane_host() -> anyhow::Result<()> {
    add_netns(KUBE)?;
    ip(&[
        "link", "add", "eth0", "netns", KUBE, "type", "veth", "peer", "name", "tor-kube", "netns",
        TOR,
    ])?;
    let kube_addr = format!("{KUBE_ADDR}/24");
    let tor_addr = format!("{TOR_KUBE_ADDR}/24");
    let gateway = TOR_KUBE_ADDR.to_string();
    ns_exec(KUBE, &["ip", "addr", "add", &kube_addr, "dev", "eth0"])?;
    ns_exec(KUBE, &["ip", "link", "set", "eth0", "up"])?;
    ns_exec(KUBE, &["ip", "route", "add", "default", "via", &gateway])?;
    ns_exec(TOR, &["ip", "addr", "add", &tor_addr, "dev", "tor-kube"])?;
    ns_exec(TOR, &["ip", "link", "set", "tor-kube", "up"])?;
    Ok(())
}

fn pids_in(ns: &str) -> Vec<i32> {
    run(None, &["ip", "netns", "pids", ns])
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Kill everything running in the lab's namespaces and delete them. Waits (up to 10 s a
/// namespace) until the processes are gone, so that none still writes into the lab's
/// directory (etcd's data, logs) while `down` removes it.
pub fn destroy() -> Vec<String> {
    let mut errors = Vec::new();
    for ns in existing() {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let pids = pids_in(&ns);
            if pids.is_empty() {
                break;
            }
            if std::time::Instant::now() >= deadline {
                errors.push(format!("{ns}: processes {pids:?} survived SIGKILL"));
                break;
            }
            for pid in pids {
                // SAFETY: kill(2) on a pid read from the kernel; no memory is involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if let Err(e) = run(None, &["ip", "netns", "delete", &ns]) {
            errors.push(e.to_string());
        }
    }
    errors
}

/// Can this kernel make IP-in-IP tunnels? Tried in a scratch namespace.
pub fn kernel_has_ipip() -> bool {
    let ns = format!("{PREFIX}probe");
    if add_netns(&ns).is_err() {
        return false;
    }
    let ok = ns_exec(
        &ns,
        &[
            "ip", "link", "add", "probe0", "type", "ipip", "local", "10.0.0.1", "remote",
            "10.0.0.2",
        ],
    )
    .is_ok();
    let _ = run(None, &["ip", "netns", "delete", &ns]);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_spread_over_subnets() {
        let p = plan(3, 2).unwrap();
        let got: Vec<(String, u8, String)> = p
            .iter()
            .map(|n| (n.name.clone(), n.subnet, n.address.to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("node1".into(), 1, "10.10.1.11".into()),
                ("node2".into(), 1, "10.10.1.12".into()),
                ("node3".into(), 2, "10.10.2.11".into()),
            ]
        );
        assert_eq!(p[2].gateway, Ipv4Addr::new(10, 10, 2, 1));
        assert!(plan(2, 3).is_err());
        assert!(plan(0, 1).is_err());
        assert_eq!(
            plan(5, 1).unwrap().iter().filter(|n| n.subnet == 1).count(),
            5
        );
    }
}
