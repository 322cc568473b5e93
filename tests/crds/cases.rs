#![allow(dead_code)] // each test crate uses a part of it
//! Manifests the CRDs must refuse, each with the field path the refusal names: checked
//! by the local evaluator (`tests/crds.rs`, through `validate.rs`) and by a real
//! kube-apiserver (`tests/kube_crds.rs`), so the two agree case by case. Every edit
//! starts from a valid sample: an example of `examples/resources/` or one of
//! [`extra_samples`] for the kinds only serval writes.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::validate::{Crds, Source};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// Valid objects of the kinds no example shows (the IPAM's, a node's reported status)
/// and of field combinations the examples leave out, so that every validated field
/// appears in some sample.
pub fn extra_samples() -> Vec<Value> {
    // Every condition and operation of a BGPFilter rule, in each of the four lists.
    let rule = json!({"action": "Accept", "peerType": "iBGP", "source": "RemotePeers",
        "interface": "eth1", "communities": {"values": ["65000:1", "65000:1:2"]},
        "asPathPrefix": [65001, 65002],
        "operations": [{"addCommunity": {"value": "no-export"}},
                       {"prependASPath": {"prefix": [64512]}}]});
    let every_condition = json!({"apiVersion": "serval.dev/v1", "kind": "BGPFilter",
        "metadata": {"name": "every-condition"},
        "spec": {"exportV4": [rule], "importV4": [rule], "exportV6": [rule], "importV6": [rule]}});
    vec![
        every_condition,
        json!({"apiVersion": "serval.dev/v1", "kind": "IPAMBlock",
            "metadata": {"name": "10-65-12-0-26"},
            "spec": {"cidr": "10.65.12.0/26", "affinity": "worker-1",
                "allocations": [0, null, 1], "unallocated": [3, 4, 5],
                "attributes": [{"handleId": "k8s-pod-network.abc", "namespace": "default",
                    "pod": "web-1", "node": "worker-1", "allocatedAt": 1796601600},
                    {"handleId": "vxlan-tunnel-addr-worker-1"}]}}),
        json!({"apiVersion": "serval.dev/v1", "kind": "BlockAffinity",
            "metadata": {"name": "worker-1-10-65-12-0-26", "labels": {"serval.dev/node": "worker-1"}},
            "spec": {"cidr": "10.65.12.0/26", "node": "worker-1", "state": "confirmed"}}),
        json!({"apiVersion": "serval.dev/v1", "kind": "IPAMHandle",
            "metadata": {"name": "k8s-pod-network.abc"},
            "spec": {"handleId": "k8s-pod-network.abc", "block": {"10.65.12.0/26": 1}}}),
        json!({"apiVersion": "serval.dev/v1", "kind": "BGPConfiguration",
            "metadata": {"name": "node.worker-2"},
            "spec": {"nodeMeshPassword": {"secretKeyRef": {"name": "bgp-passwords", "key": "mesh"}}}}),
        json!({"apiVersion": "serval.dev/v1", "kind": "BGPConfiguration",
            "metadata": {"name": "node.worker-3"},
            "spec": {"nodeMeshPassword": {"value": "mesh-secret"}}}),
        // The mesh with BFD (the example's design has no mesh).
        json!({"apiVersion": "serval.dev/v1", "kind": "BGPConfiguration",
            "metadata": {"name": "default"},
            "spec": {"nodeToNodeMeshEnabled": true, "nodeMeshBFDProfile": "mesh",
                "loadBalancerAssignIPs": "RequestedServicesOnly"}}),
        json!({"apiVersion": "serval.dev/v1", "kind": "BGPPeer",
            "metadata": {"name": "plain-v4"},
            "spec": {"peerIP": "192.0.2.1:1179", "asNumber": 65001, "password": {"value": "s3cret"},
                "maxRestartTime": "90s", "reachableBy": "192.0.2.254"}}),
        json!({"apiVersion": "serval.dev/v1", "kind": "BGPFilter",
            "metadata": {"name": "import-v6"},
            "spec": {"importV6": [{"action": "Accept", "matchOperator": "In",
                "cidr": "fd00::/8", "prefixLength": {"min": 48, "max": 64}}]}}),
        json!({"apiVersion": "serval.dev/v1", "kind": "BGPFilter",
            "metadata": {"name": "import-v4-lengths"},
            "spec": {"importV4": [{"action": "Accept", "matchOperator": "In",
                "cidr": "10.0.0.0/8", "prefixLength": {"min": 16, "max": 24}}]}}),
        json!({"apiVersion": "serval.dev/v1", "kind": "ServalNode",
            "metadata": {"name": "worker-6"},
            "spec": {"bgp": {"ipv4Address": "192.0.2.16/24"},
                "ipv6VXLANTunnelAddr": "fd00:10:65::1", "vxlanTunnelMACAddrV6": "66:cf:00:0a:bc:02"}}),
        json!({"apiVersion": "serval.dev/v1", "kind": "ServalNodeStatus",
            "metadata": {"name": "worker-1"},
            "spec": {"node": "worker-1", "classes": ["Agent", "BGP", "Routes"], "updatePeriodSeconds": 10},
            "status": {
                "lastUpdated": "2025-01-02T03:04:05Z",
                "agent": {"state": "Ready", "version": "0.1.0", "routerID": "192.0.2.10",
                    "lastBootTime": "2025-01-02T03:00:00Z",
                    "lastReconfigurationTime": "2025-01-02T03:01:00Z"},
                "bgp": {"numberEstablishedV4": 1, "numberNotEstablishedV4": 0,
                    "numberEstablishedV6": 1, "numberNotEstablishedV6": 0,
                    "peersV4": [{"peerIP": "192.0.2.254", "asNumber": 65001, "type": "GlobalPeer",
                        "state": "Established", "since": "2025-01-02T03:00:10Z",
                        "prefixesReceived": 1, "prefixesAdvertised": 2,
                        "bfd": {"state": "Up", "transmitInterval": 100, "receiveInterval": 100,
                            "detectMultiplier": 3, "detectionTime": 300, "failures": 0}}],
                    "peersV6": [{"peerIP": "2001:db8::1", "asNumber": 65001, "type": "NodePeer",
                        "state": "Established", "since": "2025-01-02T03:00:10Z",
                        "prefixesReceived": 1, "prefixesAdvertised": 2,
                        "bfd": {"state": "Down", "multihop": true, "transmitInterval": 1000,
                            "receiveInterval": 300, "detectMultiplier": 3, "detectionTime": 900,
                            "lastDiagnostic": "control detection time expired",
                            "remoteDiagnostic": "neighbor signaled session down",
                            "failures": 2}}]},
                "routes": {
                    "routesV4": [{"type": "FIB", "destination": "10.65.7.0/26",
                        "gateway": "192.0.2.11", "interface": "eth0",
                        "learnedFrom": {"sourceType": "NodeMesh", "peerIP": "192.0.2.11"}}],
                    "routesV6": [{"type": "RIB", "destination": "fd00:10:65:7::/122",
                        "gateway": "2001:db8::11", "interface": "eth0",
                        "learnedFrom": {"sourceType": "BGPPeer", "peerIP": "2001:db8::1"}}]}}}),
    ]
}

/// Every sample: the examples (in file order), then [`extra_samples`].
pub fn samples() -> Vec<Value> {
    let dir = root().join("examples/resources");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut out: Vec<Value> = files.iter().flat_map(|f| documents(f)).collect();
    out.extend(extra_samples());
    out
}

/// The first sample of `kind`.
pub fn sample(kind: &str) -> Value {
    samples()
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no sample of {kind}"))
}

/// The sample of `kind` named `name`.
pub fn sample_named(kind: &str, name: &str) -> Value {
    samples()
        .into_iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no sample {kind} {name}"))
}

/// Sets (Some) or removes (None) the field at a dotted path (`spec.exportV4.0.cidr`).
pub fn edit(doc: &mut Value, path: &str, value: Option<Value>) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap();
    let mut node = doc;
    for p in parts {
        node = match p.parse::<usize>() {
            Ok(i) => &mut node[i],
            Err(_) => &mut node[p],
        };
    }
    match (value, node) {
        (Some(v), Value::Array(a)) => a[last.parse::<usize>().unwrap()] = v,
        (Some(v), n) => n[last] = v,
        (None, Value::Object(o)) => {
            o.remove(last);
        }
        (None, _) => panic!("{path}: not an object"),
    }
}

/// Edits of a sample and the refusal they must cause.
pub struct Invalid {
    /// The sample's kind, and its name (empty: the first sample of the kind).
    pub kind: &'static str,
    pub name: &'static str,
    pub edits: Vec<(&'static str, Option<Value>)>,
    /// The path the refusal names (`spec.exportV4[0].cidr`; empty: the object).
    pub path: String,
    pub source: Source,
}

impl Invalid {
    /// The sample with the edits made.
    pub fn doc(&self) -> Value {
        let mut doc = if self.name.is_empty() {
            sample(self.kind)
        } else {
            sample_named(self.kind, self.name)
        };
        for (p, v) in &self.edits {
            edit(&mut doc, p, v.clone());
        }
        doc
    }

    /// The sample as it is, before the edits (the stored object of an update).
    pub fn doc_before(&self) -> Value {
        Invalid {
            edits: Vec::new(),
            path: String::new(),
            ..*self
        }
        .doc()
    }

    pub fn describe(&self) -> String {
        let name = if self.name.is_empty() { "" } else { self.name };
        format!("{} {name} {:?}", self.kind, self.edits)
    }
}

fn case(
    kind: &'static str,
    edits: Vec<(&'static str, Option<Value>)>,
    path: impl Into<String>,
    source: Source,
) -> Invalid {
    named(kind, "", edits, path, source)
}

fn named(
    kind: &'static str,
    name: &'static str,
    edits: Vec<(&'static str, Option<Value>)>,
    path: impl Into<String>,
    source: Source,
) -> Invalid {
    Invalid {
        kind,
        name,
        edits,
        path: path.into(),
        source,
    }
}

/// Manifests refused on create.
pub fn invalid() -> Vec<Invalid> {
    let mut cases: Vec<Invalid> = [
        (
            "BGPPeer",
            vec![("spec.peerIP", Some(json!("10.0.0.300")))],
            "spec.peerIP",
            Source::Schema,
        ),
        (
            "BGPPeer",
            vec![("spec.peerIP", Some(json!("tor-1:179")))],
            "spec.peerIP",
            Source::Schema,
        ),
        (
            "BGPPeer",
            vec![("spec.asNumber", Some(json!(0)))],
            "spec.asNumber",
            Source::Schema,
        ),
        (
            "BGPPeer",
            vec![("spec.asNumber", Some(json!(4294967296u64)))],
            "spec.asNumber",
            Source::Schema,
        ),
        (
            "BGPPeer",
            vec![("spec.ttlSecurity", Some(json!(0)))],
            "spec.ttlSecurity",
            Source::Schema,
        ),
        (
            "BGPPeer",
            vec![("spec.ttlSecurity", Some(json!(256)))],
            "spec.ttlSecurity",
            Source::Schema,
        ),
        (
            "BGPPeer",
            vec![("spec.keepAliveTime", Some(json!("10 seconds")))],
            "spec.keepAliveTime",
            Source::Schema,
        ),
        (
            "BGPPeer",
            vec![("spec.keepAliveTime", Some(json!("7h")))],
            "spec.keepAliveTime",
            Source::Cel,
        ),
        (
            "BGPPeer",
            vec![("spec.maxRestartTime", Some(json!("2h")))],
            "spec.maxRestartTime",
            Source::Cel,
        ),
        (
            "BGPPeer",
            vec![("spec.sourceAddress", Some(json!("Auto")))],
            "spec.sourceAddress",
            Source::Schema,
        ),
        (
            "BGPPeer",
            vec![("spec.keepOriginalNexthop", Some(json!(true)))],
            "spec",
            Source::Schema,
        ),
        (
            "BGPPeer",
            vec![("spec.node", Some(json!("worker-1")))],
            "spec.nodeSelector",
            Source::Cel,
        ),
        (
            "BGPPeer",
            vec![("spec.peerSelector", Some(json!("all()")))],
            "spec.peerIP",
            Source::Cel,
        ),
        (
            "BGPPeer",
            vec![("spec.peerIP", None)],
            "spec.peerIP",
            Source::Cel,
        ),
        (
            "BGPPeer",
            vec![("spec.localASNumber", Some(json!(0)))],
            "spec.localASNumber",
            Source::Schema,
        ),
        (
            "BGPPeer",
            vec![
                ("spec.peerIP", None),
                ("spec.asNumber", None),
                ("spec.peerSelector", Some(json!("all()"))),
                ("spec.localASNumber", Some(json!(65010))),
            ],
            "spec.localASNumber",
            Source::Cel,
        ),
        (
            "BGPPeer",
            vec![("spec.reversePeering", Some(json!("Manual")))],
            "spec.reversePeering",
            Source::Cel,
        ),
        (
            "BGPPeer",
            vec![
                ("spec.keepOriginalNextHop", Some(json!(true))),
                ("spec.nextHopMode", Some(json!("Self"))),
            ],
            "spec.nextHopMode",
            Source::Cel,
        ),
        (
            "BGPPeer",
            vec![("spec.nextHopMode", Some(json!("Always")))],
            "spec.nextHopMode",
            Source::Schema,
        ),
        (
            "BGPFilter",
            vec![(
                "spec.exportV4.0.operations",
                Some(json!([{"addCommunity": {"value": "65000:1"},
                    "prependASPath": {"prefix": [64512]}}])),
            )],
            "spec.exportV4[0].operations[0]",
            Source::Cel,
        ),
        (
            "BGPFilter",
            vec![
                ("spec.exportV4.0.action", Some(json!("Reject"))),
                (
                    "spec.exportV4.0.operations",
                    Some(json!([{"addCommunity": {"value": "65000:1"}}])),
                ),
            ],
            "spec.exportV4[0].operations",
            Source::Cel,
        ),
        (
            "BGPFilter",
            vec![(
                "spec.exportV4.0.communities",
                Some(json!({"values": ["65000"]})),
            )],
            "spec.exportV4[0].communities.values[0]",
            Source::Schema,
        ),
        (
            "BGPFilter",
            vec![("spec.exportV4.0.peerType", Some(json!("ebgp")))],
            "spec.exportV4[0].peerType",
            Source::Schema,
        ),
        (
            "IPReservation",
            vec![("spec.reservedCIDRs.1", Some(json!("10.244.7.300")))],
            "spec.reservedCIDRs[1]",
            Source::Schema,
        ),
        (
            "BFDProfile",
            vec![("spec.echoMode", Some(json!(true)))],
            "spec.echoMode",
            Source::Cel,
        ),
        (
            "BFDProfile",
            vec![("spec.receiveInterval", Some(json!(5)))],
            "spec.receiveInterval",
            Source::Schema,
        ),
        (
            "BFDProfile",
            vec![("spec.transmitInterval", Some(json!(60001)))],
            "spec.transmitInterval",
            Source::Schema,
        ),
        (
            "BFDProfile",
            vec![("spec.detectMultiplier", Some(json!(1)))],
            "spec.detectMultiplier",
            Source::Schema,
        ),
        (
            "BFDProfile",
            vec![("spec.minimumTtl", Some(json!(255)))],
            "spec.minimumTtl",
            Source::Schema,
        ),
        (
            "BFDProfile",
            vec![("spec.echoModus", Some(json!(false)))],
            "spec",
            Source::Schema,
        ),
        (
            "BGPPeer",
            vec![("spec.failureDetectionMode", Some(json!("None")))],
            "spec.failureDetectionMode",
            Source::Cel,
        ),
        (
            "BGPPeer",
            vec![("spec.failureDetectionMode", Some(json!("BFD")))],
            "spec.failureDetectionMode",
            Source::Schema,
        ),
        (
            "BGPPeer",
            vec![("spec.bfdProfile", Some(json!("Tor_Fast")))],
            "spec.bfdProfile",
            Source::Schema,
        ),
        (
            "BGPConfiguration",
            vec![("spec.nodeMeshBFDProfile", Some(json!("")))],
            "spec.nodeMeshBFDProfile",
            Source::Schema,
        ),
        (
            "BGPPeer",
            vec![("spec.asNumber", None)],
            "spec.asNumber",
            Source::Cel,
        ),
        (
            "BGPPeer",
            vec![("spec.password.value", Some(json!("pw")))],
            "spec.password",
            Source::Cel,
        ),
        (
            "BGPPeer",
            vec![("spec.password", Some(json!({})))],
            "spec.password",
            Source::Cel,
        ),
        (
            "BGPPeer",
            vec![("spec.filters", Some(json!(["Not_A_Name"])))],
            "spec.filters[0]",
            Source::Schema,
        ),
        (
            "BGPPeer",
            vec![("spec.maxPrefix.limit", Some(json!(0)))],
            "spec.maxPrefix.limit",
            Source::Schema,
        ),
        (
            "BGPPeer",
            vec![("spec.maxPrefix.action", Some(json!("Drop")))],
            "spec.maxPrefix.action",
            Source::Schema,
        ),
        (
            "BGPPeer",
            vec![("spec.maxPrefix.restartAfter", Some(json!("5 minutes")))],
            "spec.maxPrefix.restartAfter",
            Source::Schema,
        ),
        (
            "BGPPeer",
            vec![("spec.maxPrefix.restartAfter", Some(json!("48h")))],
            "spec.maxPrefix.restartAfter",
            Source::Cel,
        ),
        (
            "BGPPeer",
            vec![("spec.maxPrefix.action", Some(json!("Warn")))],
            "spec.maxPrefix.restartAfter",
            Source::Cel,
        ),
        (
            "BGPPeer",
            vec![("spec.maxPrefix", Some(json!({"action": "Warn"})))],
            "spec.maxPrefix",
            Source::Schema,
        ),
        (
            "BGPFilter",
            vec![("spec.exportV4.0.cidr", Some(json!("fd00::/8")))],
            "spec.exportV4[0].cidr",
            Source::Schema,
        ),
        (
            "BGPFilter",
            vec![("spec.exportV6.0.cidr", Some(json!("10.0.0.0/8")))],
            "spec.exportV6[0].cidr",
            Source::Schema,
        ),
        (
            "BGPFilter",
            vec![("spec.exportV4.0.action", Some(json!("Drop")))],
            "spec.exportV4[0].action",
            Source::Schema,
        ),
        (
            "BGPFilter",
            vec![("spec.exportV4.0.matchOperator", Some(json!("Contains")))],
            "spec.exportV4[0].matchOperator",
            Source::Schema,
        ),
        (
            "BGPFilter",
            vec![("spec.exportV4.0.matchOperator", None)],
            "spec.exportV4[0].matchOperator",
            Source::Cel,
        ),
        (
            "BGPFilter",
            vec![
                ("spec.importV4.0.matchOperator", Some(json!("NotIn"))),
                ("spec.importV4.0.prefixLength", Some(json!({"min": 8}))),
            ],
            "spec.importV4[0].prefixLength",
            Source::Cel,
        ),
        (
            "BGPFilter",
            vec![(
                "spec.exportV4.0.prefixLength",
                Some(json!({"min": 30, "max": 26})),
            )],
            "spec.exportV4[0].prefixLength",
            Source::Cel,
        ),
        (
            "BGPFilter",
            vec![("spec.exportV4.0.prefixLength", Some(json!({"max": 33})))],
            "spec.exportV4[0].prefixLength.max",
            Source::Schema,
        ),
        (
            "IPPool",
            vec![("spec.cidr", Some(json!("10.65.0.0")))],
            "spec.cidr",
            Source::Schema,
        ),
        (
            "IPPool",
            vec![("spec.blockSize", Some(json!(33)))],
            "spec.blockSize",
            Source::Cel,
        ),
        (
            "IPPool",
            vec![("spec.blockSize", Some(json!(19)))],
            "spec.blockSize",
            Source::Schema,
        ),
        (
            "IPPool",
            vec![("spec.ipipMode", Some(json!("Sometimes")))],
            "spec.ipipMode",
            Source::Schema,
        ),
        (
            "IPPool",
            vec![("spec.vxlanMode", Some(json!("Always")))],
            "spec.vxlanMode",
            Source::Cel,
        ),
        (
            "IPPool",
            vec![(
                "spec.allowedUses",
                Some(json!(["LoadBalancer", "Workload"])),
            )],
            "spec.allowedUses",
            Source::Cel,
        ),
        (
            "IPPool",
            vec![
                ("spec.cidr", Some(json!("fd00:1::/48"))),
                ("spec.blockSize", Some(json!(122))),
            ],
            "spec.ipipMode",
            Source::Cel,
        ),
        (
            "IPPool",
            vec![("spec.allowedUses", Some(json!(["Workload", "Pods"])))],
            "spec.allowedUses[1]",
            Source::Schema,
        ),
        (
            "IPAMConfig",
            vec![("metadata.name", Some(json!("other")))],
            "",
            Source::Cel,
        ),
        (
            "BGPConfiguration",
            vec![("metadata.name", Some(json!("cluster")))],
            "",
            Source::Cel,
        ),
        (
            "BGPConfiguration",
            vec![("spec.listenPort", Some(json!(0)))],
            "spec.listenPort",
            Source::Schema,
        ),
        (
            "BGPConfiguration",
            vec![("spec.communities.0.value", Some(json!("65536:1:x")))],
            "spec.communities[0].value",
            Source::Schema,
        ),
        (
            "BGPConfiguration",
            vec![("spec.serviceClusterIPs.0.cidr", Some(json!("10.96.0.0/33")))],
            "spec.serviceClusterIPs[0].cidr",
            Source::Schema,
        ),
        (
            "BGPConfiguration",
            vec![("spec.logSeverityScreen", Some(json!("Verbose")))],
            "spec.logSeverityScreen",
            Source::Schema,
        ),
        (
            "ServalNode",
            vec![("spec.bgp.ipv4Address", Some(json!("2001:db8::10/64")))],
            "spec.bgp.ipv4Address",
            Source::Schema,
        ),
        (
            "ServalNode",
            vec![("spec.bgp.ipv6Address", Some(json!("192.0.2.10/24")))],
            "spec.bgp.ipv6Address",
            Source::Schema,
        ),
        (
            "ServalNode",
            vec![("spec.bgp.routeReflectorClusterID", Some(json!("1.2.3")))],
            "spec.bgp.routeReflectorClusterID",
            Source::Schema,
        ),
        (
            "ServalNode",
            vec![("spec.vxlanTunnelMACAddr", Some(json!("66:cf:00:0a:bc")))],
            "spec.vxlanTunnelMACAddr",
            Source::Schema,
        ),
        (
            "ServalNodeStatus",
            vec![("spec.classes", Some(json!(["Agent", "Agent"])))],
            "spec.classes",
            Source::Schema,
        ),
        (
            "ServalNodeStatus",
            vec![("spec.classes", Some(json!(["Peers"])))],
            "spec.classes[0]",
            Source::Schema,
        ),
        (
            "ServalNodeStatus",
            vec![("spec.node", None)],
            "spec",
            Source::Schema,
        ),
    ]
    .into_iter()
    .map(|(kind, edits, path, source)| case(kind, edits, path, source))
    .collect();
    // The CEL rules of the lists the cases above do not reach, and the shared password
    // rule where BGPConfiguration carries it.
    for list in ["exportV6", "importV6"] {
        let (op, len) = match list {
            "exportV6" => (
                "spec.exportV6.0.matchOperator",
                "spec.exportV6.0.prefixLength",
            ),
            _ => (
                "spec.importV6.0.matchOperator",
                "spec.importV6.0.prefixLength",
            ),
        };
        let sample = if list == "exportV6" {
            "export-pods-only"
        } else {
            "import-v6"
        };
        let at = |field: &str| format!("spec.{list}[0].{field}");
        cases.push(named(
            "BGPFilter",
            sample,
            vec![(op, None)],
            at("matchOperator"),
            Source::Cel,
        ));
        cases.push(named(
            "BGPFilter",
            sample,
            vec![(op, Some(json!("NotIn")))],
            at("prefixLength"),
            Source::Cel,
        ));
        cases.push(named(
            "BGPFilter",
            sample,
            vec![(len, Some(json!({"min": 126, "max": 120})))],
            at("prefixLength"),
            Source::Cel,
        ));
    }
    // The operations rules of the lists the cases above do not reach.
    for (list, sample) in [
        ("exportV6", "export-pods-only"),
        ("importV4", "export-pods-only"),
        ("importV6", "import-v6"),
    ] {
        let ops: &'static str = match list {
            "exportV6" => "spec.exportV6.0.operations",
            "importV4" => "spec.importV4.0.operations",
            _ => "spec.importV6.0.operations",
        };
        let action: &'static str = match list {
            "exportV6" => "spec.exportV6.0.action",
            "importV4" => "spec.importV4.0.action",
            _ => "spec.importV6.0.action",
        };
        cases.push(named(
            "BGPFilter",
            sample,
            vec![(ops, Some(json!([{}])))],
            format!("spec.{list}[0].operations[0]"),
            Source::Cel,
        ));
        cases.push(named(
            "BGPFilter",
            sample,
            vec![
                (action, Some(json!("Reject"))),
                (ops, Some(json!([{"addCommunity": {"value": "65000:1"}}]))),
            ],
            format!("spec.{list}[0].operations"),
            Source::Cel,
        ));
    }
    cases.push(case(
        "BGPFilter",
        vec![("spec.importV4.0.matchOperator", None)],
        "spec.importV4[0].matchOperator",
        Source::Cel,
    ));
    cases.push(named(
        "BGPFilter",
        "import-v4-lengths",
        vec![(
            "spec.importV4.0.prefixLength",
            Some(json!({"min": 24, "max": 16})),
        )],
        "spec.importV4[0].prefixLength",
        Source::Cel,
    ));
    cases.push(named(
        "BGPConfiguration",
        "node.worker-3",
        vec![(
            "spec.nodeMeshPassword.file",
            Some(json!("/etc/serval/mesh")),
        )],
        "spec.nodeMeshPassword",
        Source::Cel,
    ));
    cases
}

/// Changes of a stored object refused on update (transition rules: `oldSelf`).
pub fn invalid_updates() -> Vec<Invalid> {
    vec![
        case(
            "IPPool",
            vec![("spec.cidr", Some(json!("10.66.0.0/16")))],
            "spec.cidr",
            Source::Cel,
        ),
        case(
            "IPPool",
            vec![("spec.blockSize", Some(json!(24)))],
            "spec.blockSize",
            Source::Cel,
        ),
        case(
            "IPAMBlock",
            vec![("spec.cidr", Some(json!("10.65.12.64/26")))],
            "spec.cidr",
            Source::Cel,
        ),
        case(
            "BlockAffinity",
            vec![("spec.cidr", Some(json!("10.65.12.64/26")))],
            "spec.cidr",
            Source::Cel,
        ),
        case(
            "BlockAffinity",
            vec![("spec.node", Some(json!("worker-2")))],
            "spec.node",
            Source::Cel,
        ),
    ]
}

/// `spec.exportV4[0].cidr` → `spec.exportV4[].cidr`: a concrete path as the schema path
/// of `serval::crds::schema::cel_rules`.
pub fn schema_path(path: &str) -> String {
    let mut out = String::new();
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push_str("[]");
            }
            ']' => in_index = false,
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

/// The CEL rules of `crds` that no case breaks: `kind schema-path: rule`. A rule counts
/// as broken when the local evaluator reports its message at its path (the node's path
/// and the rule's `fieldPath`); transition rules (`oldSelf`) by [`invalid_updates`].
pub fn uncovered_rules(crds: &Crds) -> Vec<String> {
    let mut broken = std::collections::BTreeSet::new();
    for case in invalid() {
        for v in crds.check(&case.doc(), None) {
            broken.insert((case.kind.to_owned(), schema_path(&v.path), v.message));
        }
    }
    for case in invalid_updates() {
        for v in crds.check(&case.doc(), Some(&case.doc_before())) {
            broken.insert((case.kind.to_owned(), schema_path(&v.path), v.message));
        }
    }
    let mut out = Vec::new();
    for (kind, (_, schema)) in &crds.by_kind {
        for (node, rule) in serval::crds::schema::cel_rules(schema) {
            let field = rule
                .get("fieldPath")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let at = format!("{node}{field}").trim_start_matches('.').to_owned();
            let message = rule
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !broken.contains(&(kind.clone(), at.clone(), message.to_owned())) {
                let text = rule.get("rule").and_then(Value::as_str).unwrap_or_default();
                out.push(format!("{kind} {at}: {text}"));
            }
        }
    }
    out
}
