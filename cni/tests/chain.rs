//! serval first in a chain with Debian's reference plugins (portmap, bandwidth, tuning),
//! driven as libcni drives a configuration list; and a second attachment of the same
//! pod, as Multus makes for a pod on two networks.

mod support;

use serde_json::{json, Map, Value};
use support::*;

/// A configuration list, run plugin by plugin as libcni does: each plugin's config gets
/// the list's `name` and `cniVersion`, `runtimeConfig` for the capabilities it declares,
/// and `prevResult` (the previous plugin's result on ADD, the chain's result on CHECK and
/// DEL, which run in reverse for DEL).
struct Chain {
    name: String,
    version: String,
    plugins: Vec<Value>,
    runtime: Map<String, Value>,
}

impl Chain {
    fn conf_for(&self, plugin: &Value, prev: Option<&Value>) -> Value {
        let mut c = plugin.clone();
        c["name"] = json!(self.name);
        c["cniVersion"] = json!(self.version);
        if let Some(caps) = plugin.get("capabilities").and_then(Value::as_object) {
            let rc: Map<String, Value> = caps
                .iter()
                .filter(|(_, on)| on.as_bool() == Some(true))
                .filter_map(|(k, _)| Some((k.clone(), self.runtime.get(k)?.clone())))
                .collect();
            if !rc.is_empty() {
                c["runtimeConfig"] = Value::Object(rc);
            }
        }
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    fn bin(plugin: &Value) -> std::path::PathBuf {
        match plugin["type"].as_str().unwrap() {
            "serval" => support::plugin(),
            other => reference(other),
        }
    }

    fn add(&self, node: &Node, pod: &Pod) -> Value {
        let mut prev: Option<Value> = None;
        for p in &self.plugins {
            let conf = self.conf_for(p, prev.as_ref());
            let r = node.run(&Self::bin(p), &env("ADD", Some(pod), "eth0"), &conf);
            prev = Some(r.ok());
        }
        prev.unwrap()
    }

    fn check(&self, node: &Node, pod: &Pod, result: &Value) -> Vec<Reply> {
        self.plugins
            .iter()
            .map(|p| {
                let conf = self.conf_for(p, Some(result));
                node.run(&Self::bin(p), &env("CHECK", Some(pod), "eth0"), &conf)
            })
            .collect()
    }

    fn del(&self, node: &Node, pod: &Pod, result: &Value) {
        for p in self.plugins.iter().rev() {
            let conf = self.conf_for(p, Some(result));
            node.run(&Self::bin(p), &env("DEL", Some(pod), "eth0"), &conf)
                .ok();
        }
    }
}

#[test]
fn first_in_a_chain_with_portmap_bandwidth_tuning() {
    serval_integration::tools::require_all(&["iptables", "tc"]).unwrap_or_else(|e| panic!("{e}"));
    let node = Node::new(&[("v4", "10.253.0.0/24", 28), ("v6", "fd00:253::/64", 122)]);
    // Debian's plugins (1.1.1) speak CNI up to 1.0.0.
    let mut serval = node.dual_stack("1.0.0");
    serval.as_object_mut().unwrap().remove("name");
    serval.as_object_mut().unwrap().remove("cniVersion");
    let chain = Chain {
        name: NETWORK.into(),
        version: "1.0.0".into(),
        plugins: vec![
            serval,
            json!({"type": "portmap", "snat": true, "capabilities": {"portMappings": true}}),
            json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
            json!({"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.accept_local": "1"}}),
        ],
        runtime: json!({
            "portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 8000000, "ingressBurst": 1000000,
                          "egressRate": 8000000, "egressBurst": 1000000},
        })
        .as_object()
        .unwrap()
        .clone(),
    };
    let pod = node.pod();
    let result = chain.add(&node, &pod);
    assert_eq!(result["cniVersion"], "1.0.0");
    let pod_ip = address(&result, 4);
    let host = result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();

    // Each plugin did its part on top of serval's wiring.
    let nat = node.ns.exec(&["iptables", "-t", "nat", "-S"]).unwrap();
    assert!(
        nat.contains("18080") && nat.contains(&pod_ip.to_string()),
        "{nat}"
    );
    let qdisc = node
        .ns
        .exec(&["tc", "qdisc", "show", "dev", &host])
        .unwrap();
    assert!(
        qdisc.contains("tbf"),
        "bandwidth shapes the host veth: {qdisc}"
    );
    let sysctl = pod
        .ns
        .exec(&["cat", "/proc/sys/net/ipv4/conf/eth0/accept_local"])
        .unwrap();
    assert_eq!(sysctl.trim(), "1");
    pod.ping(HOST_V4).unwrap();

    // CHECK passes on the chain's result for serval and the plugins after it. portmap
    // 1.1.1's own CHECK looks for its IPv4 rules with ip6tables and always fails (fixed
    // in later releases), so its answer says nothing about serval and is not asserted.
    for (p, r) in chain.plugins.iter().zip(chain.check(&node, &pod, &result)) {
        if p["type"] != "portmap" {
            assert_eq!(r.code, 0, "CHECK of {}: {r:?}", p["type"]);
        }
    }
    // Breaking serval's part fails serval's CHECK only.
    pod.ip(&["route", "del", "default"]);
    let replies = chain.check(&node, &pod, &result);
    replies[0].err(103);
    assert_eq!(replies[2].code, 0, "bandwidth: {:?}", replies[2]);
    assert_eq!(replies[3].code, 0, "tuning: {:?}", replies[3]);

    chain.del(&node, &pod, &result);
    let nat = node.ns.exec(&["iptables", "-t", "nat", "-S"]).unwrap();
    assert!(!nat.contains("18080"), "{nat}");
    assert!(node.allocations().is_empty());
    assert!(node.host_veths().is_empty());
}

/// Multus gives a pod a second network through the same plugin: another network name
/// and interface, its own address, handle and veth; each DEL removes only its own.
#[test]
fn second_attachment_of_one_pod() {
    let node = Node::new(&[("a", "10.254.0.0/24", 28), ("b", "10.254.1.0/24", 28)]);
    let first = node.conf("1.1.0");
    let mut second = node.conf("1.1.0");
    second["name"] = json!("storage-net");
    second["ipam"]["ipv4_pools"] = json!(["b"]);
    let pod = node.pod();
    let r1 = node.cni("ADD", Some(&pod), &first).ok();
    let r2 = node
        .run(&plugin(), &env("ADD", Some(&pod), "net1"), &second)
        .ok();
    assert!(address(&r2, 4).to_string().starts_with("10.254.1."), "{r2}");
    assert_ne!(r1["interfaces"][0]["name"], r2["interfaces"][0]["name"]);
    assert_eq!(node.allocations().len(), 2);
    assert_eq!(node.host_veths().len(), 2);
    // Deleting the second network leaves the first.
    node.run(&plugin(), &env("DEL", Some(&pod), "net1"), &second)
        .ok();
    assert_eq!(node.allocations().len(), 1);
    assert!(pod.ip(&["link", "show"]).contains("eth0"));
    let mut check = first.clone();
    check["prevResult"] = r1;
    node.cni("CHECK", Some(&pod), &check).ok();
    node.cni("DEL", Some(&pod), &first).ok();
    assert!(node.allocations().is_empty());
}
