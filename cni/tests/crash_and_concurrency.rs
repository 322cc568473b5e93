//! An ADD killed in the middle leaves nothing once the runtime retries and runs GC; 50
//! concurrent ADDs on one node and the embedded store all get distinct addresses.

mod support;

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipam::allocator::{AutoAssignRequest, NodeInfo};
use ipam::model::{HandleId, NodeName};
use serde_json::json;
use support::*;

/// Starts an ADD that stops at `point`, waits until it is there, and kills it.
fn add_killed_at(node: &Node, pod: &Pod, conf: &serde_json::Value, point: &str) {
    let marker = node.dir.path().join(format!("{}-{point}", pod.name));
    let mut env = env("ADD", Some(pod), "eth0");
    env.push(("SERVAL_CNI_FAULT", format!("{point}:{}", marker.display())));
    let mut child = node.spawn(&plugin(), &env, conf);
    wait_for_file(&marker);
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the plugin was killed: {status}");
}

#[test]
fn add_killed_mid_way_leaves_no_leak_after_gc() {
    let node = Node::new(&[("v4", "10.251.0.0/24", 28)]);
    let conf = node.conf("1.1.0");
    let (a, b, c) = (node.pod(), node.pod(), node.pod());

    // A dies right after IPAM gave it an address: an allocation, no veth.
    add_killed_at(&node, &a, &conf, "after-ipam");
    let held_a: Vec<IpAddr> = node
        .allocations()
        .into_iter()
        .filter(|(_, h)| h.contains(&a.id))
        .map(|(ip, _)| ip)
        .collect();
    assert_eq!(held_a.len(), 1, "{:?}", node.allocations());
    assert!(node.host_veths().is_empty());

    // B dies after wiring, before printing its result: an allocation and a veth.
    add_killed_at(&node, &b, &conf, "after-veth");
    assert_eq!(node.host_veths().len(), 1);

    // The runtime retries A: same address, one veth, working.
    let ra = node.cni("ADD", Some(&a), &conf).ok();
    assert_eq!(address(&ra, 4), held_a[0]);
    let rc = node.cni("ADD", Some(&c), &conf).ok();
    a.ping(&address(&rc, 4).to_string()).unwrap();

    // Another network's allocation on this node, which GC must not touch.
    let ipam = node.ipam();
    let foreign = block_on(ipam.auto_assign(AutoAssignRequest::new(
        HandleId::new("other-network.dead.eth0").unwrap(),
        NodeInfo::new(NodeName::new(NODE).unwrap()),
        1,
        0,
    )))
    .unwrap()
    .v4[0];

    // GC with the attachments the runtime still has: B's address and veth go.
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([
        {"containerID": a.id, "ifname": "eth0"},
        {"containerID": c.id, "ifname": "eth0"},
    ]);
    let r = node.cni("GC", None, &gc);
    r.ok();
    assert!(r.stdout.is_empty());
    let left: BTreeSet<IpAddr> = node.allocations().into_keys().collect();
    let want: BTreeSet<IpAddr> = [address(&ra, 4), address(&rc, 4), foreign].into();
    assert_eq!(left, want);
    let mut handles = node.handles();
    handles.sort();
    assert_eq!(handles.len(), 3, "{handles:?}");
    assert!(handles.iter().all(|h| !h.contains(&b.id)), "{handles:?}");
    let veths = node.host_veths();
    assert_eq!(veths.len(), 2, "{veths:?}");
    assert!(
        veths.values().all(|alias| !alias.contains(&b.id)),
        "{veths:?}"
    );
    // B's pod lost its interface with the veth.
    assert!(!b.ip(&["link", "show"]).contains("eth0"));
    // A second GC has nothing to do; A and C still work.
    node.cni("GC", None, &gc).ok();
    assert_eq!(node.allocations().len(), 3);
    a.ping(&address(&rc, 4).to_string()).unwrap();
    // GC without the list is refused rather than taken as "nothing is valid".
    node.cni("GC", None, &conf).err(7);
    assert_eq!(node.allocations().len(), 3);
}

#[test]
fn fifty_concurrent_adds_get_distinct_addresses() {
    let node = Node::new(&[("v4", "10.252.0.0/16", 26)]);
    let conf = node.conf("1.1.0");
    let pods: Vec<Pod> = (0..50).map(|_| node.pod()).collect();
    let children: Vec<_> = pods
        .iter()
        .map(|p| node.spawn(&plugin(), &env("ADD", Some(p), "eth0"), &conf))
        .collect();
    let results: Vec<_> = children.into_iter().map(|c| finish(c).ok()).collect();
    let addrs: BTreeSet<IpAddr> = results.iter().map(|r| address(r, 4)).collect();
    assert_eq!(addrs.len(), 50, "every pod its own address: {addrs:?}");
    assert_eq!(node.allocations().len(), 50);
    assert_eq!(node.host_veths().len(), 50);
    // They are real: the first pod reaches the last.
    pods[0].ping(&address(&results[49], 4).to_string()).unwrap();
    pods[49].ping(&address(&results[0], 4).to_string()).unwrap();
    let children: Vec<_> = pods
        .iter()
        .map(|p| node.spawn(&plugin(), &env("DEL", Some(p), "eth0"), &conf))
        .collect();
    for c in children {
        finish(c).ok();
    }
    assert!(node.allocations().is_empty());
    assert!(node.handles().is_empty());
    assert!(node.host_veths().is_empty());
}
