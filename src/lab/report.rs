//! What `serval lab up` and `serval lab status` print: each node's agent status and kernel
//! routes, the ToR's view of the pod blocks, pod-to-pod pings within and across subnets,
//! a pod's egress to the outside host through natOutgoing, and on the kubernetes
//! datastore what the agents wrote into the API server, with the kubectl command that
//! shows it. Any failed check makes the command fail, so the lab is a test as well as a
//! demonstration.

use super::kube::{self, ControlPlane};
use super::pods::{self, KernelRoute, Pod};
use super::topology::{LabNode, EXT, EXT_ADDR, KUBE};
use super::tor::{Ext, Tor};
use super::{Binaries, LabState};
use anyhow::bail;
use std::net::IpAddr;

pub fn print(state: &LabState, bins: &Binaries) -> anyhow::Result<()> {
    if let Some(note) = &state.encap_note {
        println!("note: {note}\n");
    }
    let mut failures = Vec::new();
    for n in &state.nodes {
        println!(
            "== {} ({}, subnet 10.10.{}.0/24) — serval node status",
            n.name, n.address, n.subnet
        );
        let sock = pods::node_socket(&state.dir, &n.name);
        match std::process::Command::new(&bins.serval)
            .args(["node", "status", "--socket", &sock.to_string_lossy()])
            .output()
        {
            Ok(o) if o.status.success() => print!("{}", String::from_utf8_lossy(&o.stdout)),
            Ok(o) => {
                let e = String::from_utf8_lossy(&o.stderr).trim().to_string();
                println!("  (no status: {e})");
                failures.push(format!("{}: agent status: {e}", n.name));
            }
            Err(e) => failures.push(format!("{}: running serval node status: {e}", n.name)),
        }
        println!("   kernel routes of serval (protocol 83):");
        match pods::kernel_routes(&n.netns) {
            Ok(routes) => {
                for r in &routes {
                    println!("     {}", describe(r));
                }
            }
            Err(e) => failures.push(format!("{}: reading routes: {e:#}", n.name)),
        }
        println!();
    }

    for tor in state.tors() {
        print_tor(state, &tor, &mut failures);
    }
    if state.tors > 1 {
        print_ext(state, &mut failures);
    }

    println!("== pod-to-pod pings");
    let node_of = |p: &Pod| state.nodes.iter().find(|n| n.name == p.node);
    let firsts: Vec<&Pod> = state
        .nodes
        .iter()
        .filter_map(|n| state.pods.iter().find(|p| p.node == n.name))
        .collect();
    for from in &firsts {
        for to in state.pods.iter().filter(|p| p.name != from.name) {
            let (Some(a), Some(b)) = (node_of(from), node_of(to)) else {
                continue;
            };
            let path = path_kind(a, b, to.ip);
            let ok = pods::ping(&from.netns, to.ip);
            println!(
                "   {:<12} {:<15} → {:<12} {:<15} {:<28} {}",
                from.name,
                from.ip.to_string(),
                to.name,
                to.ip.to_string(),
                path,
                if ok { "ok" } else { "FAILED" }
            );
            if !ok {
                failures.push(format!("ping {} → {} ({path})", from.name, to.name));
            }
        }
    }
    println!();

    if state.tors > 1 {
        println!("== egress to the outside host {EXT} ({EXT_ADDR}), through either ToR");
    } else {
        println!(
            "== egress to the outside host {EXT} ({EXT_ADDR}), which has no route to the pods"
        );
    }
    if !state.nat {
        println!("   not checked: the lab was made with --no-nat");
    }
    for from in firsts.iter().filter(|_| state.nat) {
        let ok = pods::ping(&from.netns, IpAddr::V4(EXT_ADDR));
        println!(
            "   {:<12} {:<15} → {EXT_ADDR}: {}",
            from.name,
            from.ip.to_string(),
            if ok {
                "ok (masqueraded: the pool has natOutgoing)"
            } else {
                "FAILED"
            }
        );
        if !ok {
            failures.push(format!("egress from {}", from.name));
        }
    }
    println!();

    if let Some(cp) = &state.kube {
        print_kube(state, cp, &mut failures);
    }

    if failures.is_empty() {
        println!(
            "all checks passed. `serval lab status` prints this again; `serval lab down` removes the lab.\n\
             logs: {}/<node>/agent.log, {}/tor{}/{}",
            state.dir.display(),
            state.dir.display(),
            if state.tors > 1 { "*" } else { "" },
            state
                .kube
                .as_ref()
                .map(|cp| format!(", {}/ (etcd, kube-apiserver)", cp.dir.display()))
                .unwrap_or_default()
        );
        Ok(())
    } else {
        bail!(
            "{} check(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        )
    }
}

fn print_tor(state: &LabState, tor: &Tor, failures: &mut Vec<String>) {
    let name = if state.tors > 1 {
        format!("top-of-rack router {} ", tor.name())
    } else {
        "top-of-rack router ".to_string()
    };
    println!(
        "== the {name}({:?}, AS {}) — its BGP routes",
        state.tor,
        super::topology::TOR_AS
    );
    match tor.routes_text() {
        Ok(t) => print!("{t}"),
        Err(e) => failures.push(format!("{} routes: {e:#}", tor.name())),
    }
    match tor.established() {
        Ok((up, all)) => {
            println!("   sessions Established: {up}/{all}");
            let want = tor.sessions(state.nodes.len());
            if up != all || all != want {
                failures.push(format!(
                    "{}: {up} of {all} sessions up, {want} expected",
                    tor.name()
                ));
            }
        }
        Err(e) => failures.push(format!("{} sessions: {e:#}", tor.name())),
    }
    match tor.bfd_text() {
        Some(Ok(t)) => {
            println!("   its BFD sessions (birdc show bfd sessions):");
            for l in t.lines().filter(|l| !l.starts_with("BIRD ")) {
                println!("     {l}");
            }
        }
        Some(Err(e)) => failures.push(format!("{} BFD sessions: {e:#}", tor.name())),
        None => {}
    }
    println!();
}

fn print_ext(state: &LabState, failures: &mut Vec<String>) {
    let ext = Ext::new(&state.dir, state.tors);
    println!(
        "== the outside host {EXT} (BIRD, AS {}) — its routes through the ToRs",
        super::topology::EXT_AS
    );
    match ext.routes_text() {
        Ok(t) => {
            for l in t.lines() {
                println!("   {l}");
            }
        }
        Err(e) => failures.push(format!("{EXT} routes: {e:#}")),
    }
    match ext.established() {
        Ok((up, all)) => {
            println!("   sessions Established: {up}/{all}");
            if up != all || all != usize::from(state.tors) {
                failures.push(format!("{EXT}: {up} of {all} sessions up"));
            }
        }
        Err(e) => failures.push(format!("{EXT} sessions: {e:#}")),
    }
    match ext.bfd_text() {
        Ok(t) => {
            println!("   its BFD sessions (birdc show bfd sessions):");
            for l in t.lines().filter(|l| !l.starts_with("BIRD ")) {
                println!("     {l}");
            }
        }
        Err(e) => failures.push(format!("{EXT} BFD sessions: {e:#}")),
    }
    println!();
}

fn print_kube(state: &LabState, cp: &ControlPlane, failures: &mut Vec<String>) {
    println!(
        "== the Kubernetes API (kube-apiserver {} at {}, in {KUBE}) — what the agents wrote",
        cp.version, cp.url
    );
    println!("   kubeconfig (cluster admin): {}", cp.kubeconfig.display());
    println!("   kubectl: {}", cp.argv(&["get", kube::SHOWN]).join(" "));
    match cp.shown_objects() {
        Ok(list) => {
            for line in kube::describe(&list) {
                println!("     {line}");
            }
            for m in kube::missing(&list, &state.nodes, &state.pods) {
                println!("   MISSING: {m}");
                failures.push(format!("Kubernetes API: {m}"));
            }
        }
        Err(e) => failures.push(format!("Kubernetes API: {e:#}")),
    }
    println!();
}

fn describe(r: &KernelRoute) -> String {
    let mut s = format!("{:<18} {}", r.dst.to_string(), r.kind);
    if r.multipath.len() > 1 {
        s.push_str(&format!(" via {}", r.multipath.join(" and ")));
    } else if let Some(v) = &r.via {
        s.push_str(&format!(" via {v}"));
    }
    if let Some(d) = &r.dev {
        s.push_str(&format!(" dev {d}"));
    }
    if r.onlink {
        s.push_str(" onlink");
    }
    s
}

/// How traffic from node `a` to a pod on node `b` goes, from `a`'s kernel route.
fn path_kind(a: &LabNode, b: &LabNode, to: IpAddr) -> String {
    let where_ = if a.name == b.name {
        "same node"
    } else if a.subnet == b.subnet {
        "same subnet"
    } else {
        "across subnets"
    };
    if a.name == b.name {
        return where_.to_string();
    }
    let dev = pods::kernel_routes(&a.netns).ok().and_then(|routes| {
        routes
            .into_iter()
            .filter(|r| r.kind != "blackhole" && r.dst.contains(&to))
            .max_by_key(|r| r.dst.prefix_len())
            .and_then(|r| r.dev)
    });
    match dev.as_deref() {
        Some(d) if d.starts_with("tunl") => format!("{where_}, IP-in-IP"),
        Some(d) if d.starts_with("vxlan") => format!("{where_}, VXLAN"),
        Some(_) => format!("{where_}, direct"),
        None => format!("{where_}, no route"),
    }
}
