//! The plugin driven as a runtime drives it, on real namespaces: ADD, ping, CHECK, DEL,
//! errors that leave nothing behind, every accepted version, STATUS and GC.

mod support;

use serde_json::{json, Value};
use support::*;

#[test]
fn add_ping_check_del_dual_stack() {
    let node = Node::new(&[("v4", "10.244.0.0/16", 26), ("v6", "fd00:244::/48", 122)]);
    let conf = node.dual_stack("1.1.0");
    let (a, b) = (node.pod(), node.pod());
    let ra = node.cni("ADD", Some(&a), &conf).ok();
    let rb = node.cni("ADD", Some(&b), &conf).ok();

    // The result, as 1.1.0 defines it.
    assert_eq!(ra["cniVersion"], "1.1.0");
    let host = ra["interfaces"][0]["name"].as_str().unwrap();
    assert!(host.starts_with("sv") && host.len() == 15, "{ra}");
    assert_eq!(ra["interfaces"][0]["mac"], "ee:ee:ee:ee:ee:ee");
    assert_eq!(ra["interfaces"][1]["name"], "eth0");
    assert_eq!(ra["interfaces"][1]["sandbox"], a.netns_path());
    assert_eq!(ra["interfaces"][1]["mtu"], 1500);
    assert!(ra["ips"][0].get("version").is_none());
    let (a4, a6) = (address(&ra, 4), address(&ra, 6));
    let (b4, b6) = (address(&rb, 4), address(&rb, 6));
    assert_ne!(a4, b4);
    assert!(ra["ips"]
        .as_array()
        .unwrap()
        .iter()
        .all(|ip| ip["interface"] == 1));
    assert!(ra["ips"][0]["address"].as_str().unwrap().ends_with("/32"));

    // The kernel state the wiring promises.
    let routes = a.ip(&["-4", "route", "show"]);
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0"),
        "{routes}"
    );
    assert!(routes.contains("169.254.1.1 dev eth0"), "{routes}");
    let routes6 = a.ip(&["-6", "route", "show"]);
    assert!(
        routes6.contains("default via fe80::1 dev eth0"),
        "{routes6}"
    );
    let host_routes = node.ns.ip(&["-4", "route", "show"]).unwrap();
    assert!(
        host_routes.contains(&format!("{a4} dev {host}")),
        "{host_routes}"
    );
    let proxy_arp = node
        .ns
        .exec(&["cat", &format!("/proc/sys/net/ipv4/conf/{host}/proxy_arp")])
        .unwrap();
    assert_eq!(proxy_arp.trim(), "1");
    assert_eq!(
        node.host_veths().get(host).map(String::as_str),
        Some(format!("serval/{}/eth0/{NETWORK}", a.id).as_str())
    );

    // Pod to pod on one node, both families, and pod to host.
    for to in [
        b4.to_string(),
        b6.to_string(),
        HOST_V4.to_string(),
        HOST_V6.to_string(),
    ] {
        a.ping(&to).unwrap_or_else(|e| panic!("{e}"));
    }
    b.ping(&a4.to_string()).unwrap();
    b.ping(&a6.to_string()).unwrap();

    // CHECK passes right after ADD, with the result as prevResult…
    let mut check = conf.clone();
    check["prevResult"] = ra.clone();
    node.cni("CHECK", Some(&a), &check).ok();
    // …and fails once someone deletes the pod's default route.
    a.ip(&["-4", "route", "del", "default"]);
    let e = node.cni("CHECK", Some(&a), &check).err(103);
    assert!(
        e["details"]
            .as_str()
            .unwrap()
            .contains("0.0.0.0/0 via 169.254.1.1"),
        "{e}"
    );
    // Or the host route.
    let mut check_b = conf.clone();
    check_b["prevResult"] = rb.clone();
    node.cni("CHECK", Some(&b), &check_b).ok();
    let host_b = rb["interfaces"][0]["name"].as_str().unwrap();
    node.ns
        .ip(&["-6", "route", "del", &format!("{b6}/128"), "dev", host_b])
        .unwrap();
    let e = node.cni("CHECK", Some(&b), &check_b).err(103);
    assert!(e["details"].as_str().unwrap().contains("route to"), "{e}");

    // DEL twice: both succeed, print nothing, and leave nothing.
    let mut del = conf.clone();
    del["prevResult"] = ra.clone();
    for _ in 0..2 {
        let r = node.cni("DEL", Some(&a), &del);
        r.ok();
        assert!(r.stdout.is_empty(), "{r:?}");
    }
    assert!(!node.host_veths().contains_key(host));
    assert!(!node.allocations().contains_key(&a4));
    assert!(!node.allocations().contains_key(&a6));
    let links = a.ip(&["link", "show"]);
    assert!(!links.contains("eth0"), "{links}");

    // DEL after the runtime removed the namespace: the addresses are still released.
    let b_path = b.netns_path();
    drop(b);
    assert!(!std::path::Path::new(&b_path).exists());
    let gone = Pod {
        ns: serval_integration::Netns::new().unwrap(),
        id: format!("{:064x}", 0xc0ffee_u64 * 1000 + 1),
        name: "pod-1".into(),
    };
    let mut env = env("DEL", Some(&gone), "eth0");
    env.retain(|(k, _)| *k != "CNI_NETNS");
    env.push(("CNI_NETNS", b_path));
    node.run(&plugin(), &env, &conf).ok();
    assert!(node.allocations().is_empty(), "{:?}", node.allocations());
    assert!(node.handles().is_empty(), "{:?}", node.handles());
    assert!(node.host_veths().is_empty(), "{:?}", node.host_veths());
    // A DEL with no namespace at all.
    env.retain(|(k, _)| *k != "CNI_NETNS");
    node.run(&plugin(), &env, &conf).ok();
    // The log went to the configured file.
    let log = std::fs::read_to_string(node.log_path()).unwrap();
    assert!(log.contains("addresses assigned"), "{log}");
}

/// Each accepted version gets the result format it defines; verbs the version lacks are
/// refused with code 1.
#[test]
fn every_version_gets_its_result_format() {
    let node = Node::new(&[("v4", "10.245.0.0/24", 28)]);
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let pod = node.pod();
        let conf = node.conf(v);
        let r = node.cni("ADD", Some(&pod), &conf).ok();
        assert_eq!(r["cniVersion"], v);
        let old = v.starts_with("0.");
        assert_eq!(r["ips"][0].get("version").is_some(), old, "{v}: {r}");
        if old {
            assert_eq!(r["ips"][0]["version"], "4");
        }
        assert_eq!(
            r["interfaces"][1].get("mtu").is_some(),
            v == "1.1.0",
            "{v}: {r}"
        );
        let mut check = conf.clone();
        check["prevResult"] = r.clone();
        let c = node.cni("CHECK", Some(&pod), &check);
        if v == "0.3.0" || v == "0.3.1" {
            c.err(1);
        } else {
            c.ok();
        }
        // DEL with the prevResult of this version.
        node.cni("DEL", Some(&pod), &check).ok();
    }
    for verb in ["STATUS", "GC"] {
        node.cni(verb, None, &node.conf("1.0.0")).err(1);
    }
    let v = node
        .cni("VERSION", None, &json!({"cniVersion": "1.1.0"}))
        .ok();
    assert_eq!(v["cniVersion"], "1.1.0");
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    assert!(node.allocations().is_empty());
}

/// Bad input of every kind: the spec's code, a message, and nothing leaked.
#[test]
fn errors_are_clear_and_leave_nothing() {
    let node = Node::new(&[("tiny", "10.246.0.0/30", 30)]);
    let pod = node.pod();
    let conf = node.conf("1.1.0");
    let run = |env: Vec<(&str, String)>, stdin: Value| node.run(&plugin(), &env, &stdin);

    // Not JSON, or not an object.
    let add = env("ADD", Some(&pod), "eth0");
    node.run_raw(&plugin(), &add, b"{not json").err(6);
    node.run_raw(&plugin(), &add, b"null").err(6);
    // Missing or bad CNI_* variables.
    let e = run(vec![], conf.clone()).err(4);
    assert!(e["msg"].as_str().unwrap().contains("CNI_COMMAND"), "{e}");
    let mut no_netns = env("ADD", Some(&pod), "eth0");
    no_netns.retain(|(k, _)| *k != "CNI_NETNS");
    let e = run(no_netns, conf.clone()).err(4);
    assert!(e["msg"].as_str().unwrap().contains("CNI_NETNS"), "{e}");
    let e = run(env("ADD", Some(&pod), "far-too-long-name"), conf.clone()).err(4);
    assert!(e["msg"].as_str().unwrap().contains("CNI_IFNAME"), "{e}");
    // A namespace path that does not exist: the container is unknown (3).
    let mut ghost = env("ADD", Some(&pod), "eth0");
    ghost.retain(|(k, _)| *k != "CNI_NETNS");
    ghost.push(("CNI_NETNS", "/run/netns/sv-does-not-exist".into()));
    let e = run(ghost, conf.clone()).err(3);
    assert!(
        e["msg"].as_str().unwrap().contains("sv-does-not-exist"),
        "{e}"
    );
    // A path that is not a namespace (4).
    let mut not_ns = env("ADD", Some(&pod), "eth0");
    not_ns.retain(|(k, _)| *k != "CNI_NETNS");
    not_ns.push(("CNI_NETNS", node.store_path().display().to_string()));
    run(not_ns, conf.clone()).err(4);
    // Unknown store (7), unknown key (2), unsupported version (1).
    let mut bad = conf.clone();
    bad["datastore"] = json!("consul:127.0.0.1");
    let e = node.cni("ADD", Some(&pod), &bad).err(7);
    assert!(e["details"].as_str().unwrap().contains("consul"), "{e}");
    let mut bad = conf.clone();
    bad["ipMasq"] = json!(true);
    let e = node.cni("ADD", Some(&pod), &bad).err(2);
    assert!(e["msg"].as_str().unwrap().contains("ipMasq"), "{e}");
    let mut bad = conf.clone();
    bad["cniVersion"] = json!("0.2.0");
    node.cni("ADD", Some(&pod), &bad).err(1);
    assert!(node.host_veths().is_empty());
    assert!(node.allocations().is_empty());

    // The pool holds four addresses: the fifth pod gets code 100 and nothing stays.
    let pods: Vec<Pod> = (0..4).map(|_| node.pod()).collect();
    for p in &pods {
        node.cni("ADD", Some(p), &conf).ok();
    }
    let e = node.cni("ADD", Some(&pod), &conf).err(100);
    assert!(
        e["details"].as_str().unwrap().contains("10.246.0.0/30")
            || e["details"].as_str().unwrap().contains("full"),
        "{e}"
    );
    assert_eq!(node.allocations().len(), 4);
    assert_eq!(node.host_veths().len(), 4);
    for p in &pods {
        node.cni("DEL", Some(p), &conf).ok();
    }

    // Wiring fails half-way (the pod already has an eth0): the veth and the address
    // this ADD took are both rolled back.
    pod.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
    ]);
    let e = node.cni("ADD", Some(&pod), &conf).err(102);
    assert!(e["details"].as_str().unwrap().contains("eth0"), "{e}");
    assert!(node.host_veths().is_empty(), "{:?}", node.host_veths());
    assert!(node.allocations().is_empty(), "{:?}", node.allocations());
    assert!(node.handles().is_empty(), "{:?}", node.handles());
    let links = pod.ip(&["link", "show", "eth0"]);
    assert!(
        links.contains("eth0@other0"),
        "the pod's own interface stays: {links}"
    );
}

#[test]
fn status_reports_readiness_and_capacity() {
    let node = Node::new(&[("one", "10.247.0.0/32", 32)]);
    let conf = node.conf("1.1.0");
    let e = node.cni("STATUS", None, &conf).err(50);
    assert!(e["details"].as_str().unwrap().contains("ready"), "{e}");
    std::fs::write(node.dir.path().join("ready"), "").unwrap();
    node.cni("STATUS", None, &conf).ok();
    let pod = node.pod();
    node.cni("ADD", Some(&pod), &conf).ok();
    let e = node.cni("STATUS", None, &conf).err(50);
    assert!(e["details"].as_str().unwrap().contains("full"), "{e}");
    node.cni("DEL", Some(&pod), &conf).ok();
    node.cni("STATUS", None, &conf).ok();
}

#[test]
fn mtu_from_agent_file_then_config() {
    let node = Node::new(&[("v4", "10.248.0.0/24", 28)]);
    let mut conf = node.conf("1.1.0");
    std::fs::write(node.dir.path().join("mtu"), "1430\n").unwrap();
    let pod = node.pod();
    let r = node.cni("ADD", Some(&pod), &conf).ok();
    assert_eq!(r["interfaces"][1]["mtu"], 1430);
    assert!(pod.ip(&["link", "show", "eth0"]).contains("mtu 1430"));
    node.cni("DEL", Some(&pod), &conf).ok();
    conf["mtu"] = json!(1400);
    let r = node.cni("ADD", Some(&pod), &conf).ok();
    assert_eq!(r["interfaces"][1]["mtu"], 1400);
    node.cni("DEL", Some(&pod), &conf).ok();
}

/// Fixed addresses from the runtime (`ips` capability) and pools chosen by CIDR.
#[test]
fn fixed_addresses_and_pool_choice() {
    let node = Node::new(&[("a", "10.249.0.0/24", 28), ("b", "10.250.0.0/24", 28)]);
    let mut conf = node.conf("1.1.0");
    conf["ipam"]["ipv4_pools"] = json!(["10.250.0.0/24"]);
    let pod = node.pod();
    let r = node.cni("ADD", Some(&pod), &conf).ok();
    assert!(address(&r, 4).to_string().starts_with("10.250."), "{r}");
    node.cni("DEL", Some(&pod), &conf).ok();
    conf["runtimeConfig"] = json!({"ips": ["10.249.0.77/32"], "portMappings": []});
    let r = node.cni("ADD", Some(&pod), &conf).ok();
    assert_eq!(address(&r, 4).to_string(), "10.249.0.77");
    // Another pod asking for the same address gets 105.
    let other = node.pod();
    node.cni("ADD", Some(&other), &conf).err(105);
    node.cni("DEL", Some(&pod), &conf).ok();
    assert!(node.allocations().is_empty());
}
