//! natOutgoing with nftables, with real traffic: pods in their own namespaces behind a
//! node namespace that routes them to an "outside" namespace. The outside host has no
//! route back to the pools, and counts the sources it sees in its own nftables table.

mod dataplane_support;

use dataplane_support::{ping, require_tool, veth, NetNs};
use serval::node::dataplane::{BgpGuard, NatPool, NatProgrammer, NatReport};

fn pool(cidr: &str, nat_outgoing: bool) -> NatPool {
    NatPool {
        cidr: cidr.parse().unwrap(),
        nat_outgoing,
    }
}

/// A table in `ns` counting echo requests by source, one counter per `(name, saddr)`.
fn watch(ns: &NetNs, sources: &[(&str, &str)]) {
    let mut rules = String::new();
    for (name, saddr) in sources {
        rules.push_str(&format!(
            "add counter inet watch {name}\nadd rule inet watch in ip saddr {saddr} icmp type echo-request counter name {name}\n"
        ));
    }
    let script = format!(
        "add table inet watch\nadd chain inet watch in {{ type filter hook input priority 0; policy accept; }}\n{rules}"
    );
    let path = std::env::temp_dir().join(format!("{}-watch.nft", ns.name()));
    std::fs::write(&path, script).unwrap();
    ns.exec_ok("nft", &["-f", path.to_str().unwrap()]);
    std::fs::remove_file(path).unwrap();
}

fn counted(ns: &NetNs, name: &str) -> u64 {
    let out = ns.exec_ok("nft", &["-j", "list", "counter", "inet", "watch", name]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|o| o["counter"]["packets"].as_u64())
        .unwrap_or_else(|| panic!("no counter {name}: {v}"))
}

/// serval's table of one family as JSON with handles removed, or None if absent.
fn serval_table(ns: &NetNs, family: &str) -> Option<serde_json::Value> {
    let out = ns.exec("nft", &["-j", "list", "table", family, "serval"]);
    if !out.status.success() {
        return None;
    }
    let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    strip_handles(&mut v);
    Some(v)
}

fn strip_handles(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.remove("handle");
            map.values_mut().for_each(strip_handles);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_handles),
        _ => {}
    }
}

struct Lab {
    node: NetNs,
    outside: NetNs,
    pod: NetNs,
    pod2: NetNs,
}

/// pod (10.70.0.5, pool 10.70.0.0/16) and pod2 (10.71.0.5, pool 10.71.0.0/16) behind
/// node; node 198.51.100.1 — outside 198.51.100.2.
fn lab() -> Lab {
    require_tool("nft");
    let node = NetNs::new("natnode");
    let outside = NetNs::new("natout");
    let pod = NetNs::new("natpod");
    let pod2 = NetNs::new("natpod2");
    node.sysctl("net.ipv4.ip_forward", "1");
    veth(
        &node,
        "ext0",
        &["198.51.100.1/24"],
        &outside,
        "eth0",
        &["198.51.100.2/24"],
    );
    veth(
        &node,
        "pod0",
        &["10.70.0.1/24"],
        &pod,
        "eth0",
        &["10.70.0.5/24"],
    );
    veth(
        &node,
        "pod1",
        &["10.71.0.1/24"],
        &pod2,
        "eth0",
        &["10.71.0.5/24"],
    );
    pod.ip(&["route", "add", "default", "via", "10.70.0.1"]);
    pod2.ip(&["route", "add", "default", "via", "10.71.0.1"]);
    Lab {
        node,
        outside,
        pod,
        pod2,
    }
}

fn sync(ns: &NetNs, pools: &[NatPool]) -> NatReport {
    sync_guarded(ns, pools, &BgpGuard::default())
}

#[test]
fn nat_outgoing_pool_is_masqueraded_and_other_pools_are_not() {
    let lab = lab();
    watch(
        &lab.outside,
        &[
            ("from_node", "198.51.100.1"),
            ("from_pod2", "10.71.0.0/16"),
            ("from_pod", "10.70.0.0/16"),
        ],
    );
    watch(
        &lab.pod2,
        &[("from_pod", "10.70.0.5"), ("from_node", "10.71.0.1")],
    );

    // Before serval's rule, pod's pings leave with the pod address and get no answer.
    assert!(!ping(&lab.pod, None, "198.51.100.2", 1));
    assert!(counted(&lab.outside, "from_pod") >= 1);

    let report = sync(
        &lab.node,
        &[pool("10.70.0.0/16", true), pool("10.71.0.0/16", false)],
    );
    assert_eq!(
        report,
        NatReport {
            ipv4_table: true,
            ipv6_table: false
        }
    );

    // natOutgoing: the outside host sees the node's address and answers it.
    assert!(
        ping(&lab.pod, None, "198.51.100.2", 3),
        "masqueraded ping from pod failed"
    );
    assert!(counted(&lab.outside, "from_node") >= 3);

    // No natOutgoing on 10.71.0.0/16: its source is kept, so no answer comes back.
    assert!(!ping(&lab.pod2, None, "198.51.100.2", 1));
    assert!(counted(&lab.outside, "from_pod2") >= 1);

    // Pool to pool is never masqueraded.
    assert!(ping(&lab.pod, None, "10.71.0.5", 2));
    assert!(counted(&lab.pod2, "from_pod") >= 2);
    assert_eq!(counted(&lab.pod2, "from_node"), 0);
}

#[test]
fn nat_sync_is_idempotent_touches_nothing_else_and_removes_its_tables() {
    let lab = lab();
    lab.node.exec_ok("nft", &["add", "table", "inet", "other"]);
    lab.node.exec_ok(
        "nft",
        &[
            "add",
            "chain",
            "inet",
            "other",
            "c",
            "{ type nat hook postrouting priority 50; }",
        ],
    );
    lab.node.exec_ok(
        "nft",
        &[
            "add",
            "rule",
            "inet",
            "other",
            "c",
            "ip saddr 10.99.0.0/16 masquerade",
        ],
    );
    let other = || {
        lab.node
            .exec_ok("nft", &["-j", "list", "table", "inet", "other"])
    };
    let other_before = other();

    let pools = [
        pool("10.70.0.0/16", true),
        pool("10.71.0.0/16", false),
        pool("fd70::/48", true),
    ];
    let report = sync(&lab.node, &pools);
    assert_eq!(
        report,
        NatReport {
            ipv4_table: true,
            ipv6_table: true
        }
    );
    let v4 = serval_table(&lab.node, "ip").expect("ip serval");
    let text = v4.to_string();
    assert!(text.contains(r#""masquerade""#), "{text}");
    assert!(
        text.contains(r#""hook":"postrouting""#) && text.contains(r#""type":"nat""#),
        "{text}"
    );
    assert!(
        text.contains(r#""@masq-pools""#) && text.contains(r#""@pools""#),
        "{text}"
    );
    // The two adjacent /16 pools are one /15 in the all-pools set.
    assert!(
        text.contains(r#"{"prefix":{"addr":"10.70.0.0","len":15}}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"{"prefix":{"addr":"10.70.0.0","len":16}}"#),
        "{text}"
    );
    let v6 = serval_table(&lab.node, "ip6")
        .expect("ip6 serval")
        .to_string();
    assert!(
        v6.contains("fd70::") && v6.contains(r#""masquerade""#),
        "{v6}"
    );

    // The same pools again: the same tables.
    sync(&lab.node, &pools);
    assert_eq!(serval_table(&lab.node, "ip").expect("ip serval"), v4);

    // natOutgoing off everywhere: no masquerade; the IPv4 table stays for the BGP guard,
    // the IPv6 one (no IPv6 pool left) goes.
    let report = sync(&lab.node, &[pool("10.70.0.0/16", false)]);
    assert_eq!(
        report,
        NatReport {
            ipv4_table: true,
            ipv6_table: false
        }
    );
    let v4 = serval_table(&lab.node, "ip")
        .expect("ip serval")
        .to_string();
    assert!(!v4.contains("masquerade"), "{v4}");
    assert!(serval_table(&lab.node, "ip6").is_none());
    // No pool at all: serval's tables go, the other table stays as it was.
    let report = sync(&lab.node, &[]);
    assert_eq!(report, NatReport::default());
    assert!(serval_table(&lab.node, "ip").is_none());
    assert!(serval_table(&lab.node, "ip6").is_none());
    // Removing again is not an error.
    sync(&lab.node, &[]);
    assert_eq!(other(), other_before);
}

/// A TCP listener bound inside `ns` (a socket keeps the namespace it was made in). The
/// kernel completes handshakes into its backlog without an accept.
fn listen(ns: &NetNs, addr: &str) -> std::net::TcpListener {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    ns.run(|| async move {
        std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
    })
}

/// Whether a TCP handshake from `ns` to `addr` completes within a second.
fn connects(ns: &NetNs, addr: &str) -> bool {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    ns.run(|| async move {
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)).is_ok()
    })
}

fn sync_guarded(ns: &NetNs, pools: &[NatPool], guard: &BgpGuard) -> NatReport {
    ns.run(|| async {
        NatProgrammer::new()
            .unwrap()
            .sync(pools, guard)
            .await
            .unwrap()
    })
}

/// A pod cannot reach the node's BGP port, nor a BGP peer's port as the node (its
/// traffic would leave masqueraded); every other port stays open to it, the node's own
/// connections to its peers are untouched, and the peer set follows the peers.
#[test]
fn bgp_guard_keeps_pods_off_the_bgp_port_and_the_peers() {
    let lab = lab();
    // The node's speaker, on every address of the node, and another service of the node.
    let _speaker = listen(&lab.node, "0.0.0.0:1790");
    let _node_web = listen(&lab.node, "0.0.0.0:8080");
    // The peer's speaker and another port of the peer's.
    let _peer = listen(&lab.outside, "198.51.100.2:1790");
    let _peer_web = listen(&lab.outside, "198.51.100.2:8080");
    let pools = [pool("10.70.0.0/16", true), pool("10.71.0.0/16", false)];

    // natOutgoing alone: the pod reaches the peer's BGP port as the node.
    sync(&lab.node, &pools);
    assert!(connects(&lab.pod, "198.51.100.2:1790"));
    assert!(connects(&lab.pod, "10.70.0.1:1790"));

    let guard = BgpGuard::new(1790, ["198.51.100.2:1790".parse().unwrap()]);
    let report = sync_guarded(&lab.node, &pools, &guard);
    assert!(report.ipv4_table);
    for target in ["10.70.0.1:1790", "198.51.100.1:1790", "198.51.100.2:1790"] {
        assert!(!connects(&lab.pod, target), "pod reached {target}");
        // Also from a pool without natOutgoing.
        assert!(!connects(&lab.pod2, target), "pod2 reached {target}");
    }
    for target in ["10.70.0.1:8080", "198.51.100.1:8080", "198.51.100.2:8080"] {
        assert!(connects(&lab.pod, target), "pod cannot reach {target}");
    }
    // The node itself still reaches its peer, and the peer the node.
    assert!(connects(&lab.node, "198.51.100.2:1790"));
    assert!(connects(&lab.outside, "198.51.100.1:1790"));
    let v4 = serval_table(&lab.node, "ip")
        .expect("ip serval")
        .to_string();
    assert!(
        v4.contains(r#""name":"bgp-input""#) && v4.contains(r#""name":"bgp-forward""#),
        "{v4}"
    );

    // The peer is gone: its port is open to pods again; a new one is guarded.
    let guard = BgpGuard::new(1790, ["198.51.100.2:8080".parse().unwrap()]);
    sync_guarded(&lab.node, &pools, &guard);
    assert!(connects(&lab.pod, "198.51.100.2:1790"));
    assert!(!connects(&lab.pod, "198.51.100.2:8080"));
    assert!(!connects(&lab.pod, "10.70.0.1:1790"));

    // Without natOutgoing the guard stays.
    sync_guarded(&lab.node, &[pool("10.70.0.0/16", false)], &guard);
    assert!(!connects(&lab.pod, "10.70.0.1:1790"));
    assert!(connects(&lab.pod, "10.70.0.1:8080"));
}
