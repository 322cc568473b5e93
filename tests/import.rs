//! `serval import calico` on realistic Calico manifests (tests/fixtures/calico/): what
//! comes over, in which form, what is reported and why, and that the output passes the
//! CRDs and serval's typed parsing.

#[path = "crds/validate.rs"]
mod validate;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};
use serval::import::{calico, Imported, Severity};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/calico")
        .join(name)
}

fn import(name: &str) -> Imported {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    calico::import(&text, name).unwrap()
}

fn doc<'a>(r: &'a Imported, kind: &str, name: &str) -> &'a Value {
    r.documents
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:#?}", r.documents))
}

/// (document name, field path, severity) of every finding.
fn findings(r: &Imported) -> BTreeSet<(String, String, Severity)> {
    r.findings
        .iter()
        .map(|f| {
            let name = f
                .document
                .rsplit(' ')
                .next()
                .unwrap_or_default()
                .trim_end_matches(')')
                .to_owned();
            (name, f.path.clone(), f.severity)
        })
        .collect()
}

fn want(items: &[(&str, &str, Severity)]) -> BTreeSet<(String, String, Severity)> {
    items
        .iter()
        .map(|(n, p, s)| (n.to_string(), p.to_string(), *s))
        .collect()
}

/// Every produced document passes the generated CRDs (schema and CEL rules).
fn passes_the_crds(r: &Imported) {
    let crds = validate::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds"));
    for d in &r.documents {
        let v = crds.check(d, None);
        assert!(v.is_empty(), "{d:#}: {v:#?}");
    }
}

#[test]
fn tor_peering_comes_over_with_its_passwords_and_filters() {
    use Severity::*;
    let r = import("tor-peering.yaml");
    assert_eq!(r.documents.len(), 4);
    passes_the_crds(&r);
    let config = doc(&r, "BGPConfiguration", "default");
    assert_eq!(config["spec"]["nodeToNodeMeshEnabled"], false);
    assert_eq!(config["spec"]["asNumber"], 64512);
    assert_eq!(config["spec"]["nodeMeshMaxRestartTime"], "2m0s");
    assert_eq!(
        config["spec"]["prefixAdvertisements"][0]["communities"],
        json!(["pods"])
    );
    let a = doc(&r, "BGPPeer", "rack1-tor-a");
    assert_eq!(a["spec"]["keepAliveTime"], "10s");
    assert_eq!(a["spec"]["password"]["secretKeyRef"]["key"], "rack1");
    assert_eq!(a["spec"]["ttlSecurity"], 1);
    assert_eq!(a["spec"]["failureDetectionMode"], "BFDIfDirectlyConnected");
    assert!(
        a["spec"].get("bfdProfile").is_none(),
        "no BFDConfiguration in the input: serval's default timers"
    );
    let b = doc(&r, "BGPPeer", "rack1-tor-b");
    assert_eq!(
        b["spec"]["asNumber"], 65001,
        "the string AS becomes a number"
    );
    let f = doc(&r, "BGPFilter", "pods-out-default-in");
    assert_eq!(
        f["spec"]["exportV4"][0]["prefixLength"],
        json!({"min": 26, "max": 32})
    );
    assert_eq!(
        findings(&r),
        want(&[
            ("default", "spec.bindMode", Dropped),
            ("rack1-tor-a", "spec.keepaliveTime", Converted),
            ("rack1-tor-a", "spec.password.secretKeyRef", Converted),
            ("rack1-tor-b", "spec.asNumber", Converted),
        ])
    );
    assert!(!r.incomplete());
}

#[test]
fn calico_enterprise_bfd_comes_over_as_a_profile_the_peers_name() {
    use Severity::*;
    let r = import("bfd.yaml");
    passes_the_crds(&r);
    let profile = doc(&r, "BFDProfile", "fabric");
    assert_eq!(
        profile["spec"],
        json!({"receiveInterval": 100, "transmitInterval": 100, "detectMultiplier": 3})
    );
    for peer in ["ra1", "ra2"] {
        let p = doc(&r, "BGPPeer", peer);
        assert_eq!(
            p["spec"]["failureDetectionMode"], "BFDIfDirectlyConnected",
            "{peer}"
        );
        assert_eq!(p["spec"]["bfdProfile"], "fabric", "{peer}");
    }
    let border = doc(&r, "BGPPeer", "border");
    assert_eq!(border["spec"]["failureDetectionMode"], "None");
    assert!(border["spec"].get("bfdProfile").is_none());
    assert_eq!(
        findings(&r),
        want(&[
            ("ra1", "spec.restartMode", Dropped),
            ("ra1", "spec.birdGatewayMode", Dropped),
            ("ra1", "spec.failureDetectionMode", Converted),
            ("ra2", "spec.failureDetectionMode", Converted),
            ("fabric", "spec.nodeSelector", Converted),
            ("fabric", "spec.interfaces[0].matchPattern", Converted),
            ("fabric", "spec.interfaces[0].idleSendInterval", Dropped),
            ("fabric", "spec.interfaces[1]", Dropped),
        ])
    );
    assert!(!r.incomplete());
}

#[test]
fn calico_bfd_defaults_limits_and_several_configurations() {
    use Severity::*;
    let text = "\
apiVersion: projectcalico.org/v3
kind: BFDConfiguration
metadata: {name: defaults}
spec:
  interfaces: [{matchPattern: '*'}]
---
apiVersion: projectcalico.org/v3
kind: BFDConfiguration
metadata: {name: extreme}
spec:
  interfaces: [{matchPattern: '*', minimumRecvInterval: 5ms, minimumSendInterval: 2m, multiplier: 1}]
---
apiVersion: projectcalico.org/v3
kind: BFDConfiguration
metadata: {name: nowhere}
spec: {}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 192.0.2.1, asNumber: 65001, failureDetectionMode: BFDIfDirectlyConnected}
";
    let r = calico::import(text, "inline.yaml").unwrap();
    passes_the_crds(&r);
    // Calico Enterprise's defaults: 10 ms receive, 100 ms send, x 5.
    assert_eq!(
        doc(&r, "BFDProfile", "defaults")["spec"],
        json!({"receiveInterval": 10, "transmitInterval": 100, "detectMultiplier": 5})
    );
    assert_eq!(
        doc(&r, "BFDProfile", "extreme")["spec"],
        json!({"receiveInterval": 10, "transmitInterval": 60000, "detectMultiplier": 2})
    );
    assert!(r
        .documents
        .iter()
        .all(|d| d["metadata"]["name"] != "nowhere"));
    // Two profiles: the peer is not given one, and the finding says what to do.
    assert!(doc(&r, "BGPPeer", "tor")["spec"]
        .get("bfdProfile")
        .is_none());
    assert_eq!(
        findings(&r),
        want(&[
            (
                "extreme",
                "spec.interfaces[0].minimumRecvInterval",
                Converted
            ),
            (
                "extreme",
                "spec.interfaces[0].minimumSendInterval",
                Converted
            ),
            ("extreme", "spec.interfaces[0].multiplier", Converted),
            ("nowhere", "spec.interfaces", Skipped),
            ("tor", "spec.failureDetectionMode", Dropped),
        ])
    );
    let several = r
        .findings
        .iter()
        .find(|f| f.path == "spec.failureDetectionMode")
        .unwrap();
    assert!(
        several.reason.contains("defaults, extreme") && several.reason.contains("bfdProfile"),
        "{several}"
    );
}

#[test]
fn route_reflectors_and_nodes() {
    use Severity::*;
    let r = import("route-reflectors.yaml");
    passes_the_crds(&r);
    let kinds: Vec<&str> = r
        .documents
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["BGPPeer", "BGPPeer", "ServalNode", "ServalNode"]);
    let rr = doc(&r, "ServalNode", "rr-1");
    assert_eq!(rr["spec"]["bgp"]["routeReflectorClusterID"], "244.0.0.1");
    assert_eq!(
        rr["metadata"]["labels"]["route-reflector"], "true",
        "selectors match labels"
    );
    let mesh = doc(&r, "BGPPeer", "rr-mesh");
    assert_eq!(mesh["spec"]["nextHopMode"], "Keep");
    let w = doc(&r, "ServalNode", "worker-7");
    assert_eq!(w["spec"]["bgp"]["asNumber"], 65546, "asdot 1.10");
    assert_eq!(w["spec"]["bgp"]["ipv4Address"], "192.0.2.37/32");
    assert_eq!(w["spec"]["vxlanTunnelMACAddr"], "66:c3:9a:21:0b:7e");
    assert_eq!(
        findings(&r),
        want(&[
            ("rr-1", "spec.orchRefs", Dropped),
            ("rr-1", "spec.addresses", Dropped),
            ("worker-7", "spec.bgp.asNumber", Converted),
            ("worker-7", "spec.bgp.ipv4Address", Converted),
            ("worker-7", "spec.wireguard", Dropped),
        ])
    );
}

/// Recent Calico fields with their exact spellings: `localASNumber` (also asdot),
/// `nextHopMode`, `reversePeering`, `serviceLoadBalancerAggregation` and IPReservation's
/// `reservedCIDRs` come over as they are; `programClusterRoutes` is reported with what
/// serval does instead.
#[test]
fn newer_peer_and_configuration_fields() {
    use Severity::*;
    let r = import("newer-fields.yaml");
    passes_the_crds(&r);
    assert_eq!(r.documents.len(), 7, "{:#?}", r.findings);
    let f = doc(&r, "BGPFilter", "tor-policy");
    assert_eq!(f["spec"]["exportV4"][0]["peerType"], "eBGP");
    assert_eq!(
        f["spec"]["exportV4"][0]["operations"],
        json!([{"addCommunity": {"value": "65000:100"}},
               {"prependASPath": {"prefix": [64512, 64512]}}])
    );
    assert_eq!(f["spec"]["exportV4"][1]["source"], "RemotePeers");
    assert_eq!(
        f["spec"]["importV4"][0]["communities"],
        json!({"values": ["65001:10"]})
    );
    assert!(
        f["spec"]["importV4"][0].get("operations").is_none(),
        "setPriority is not carried"
    );
    assert_eq!(
        f["spec"]["importV4"][1]["asPathPrefix"],
        json!([65001, 65002])
    );
    assert_eq!(f["spec"]["importV4"][2]["interface"], "eth1");
    let res = doc(&r, "IPReservation", "gateways");
    assert_eq!(
        res["spec"]["reservedCIDRs"],
        json!(["10.65.0.0/29", "10.65.7.13", "fd00:65::1"])
    );
    let config = doc(&r, "BGPConfiguration", "default");
    assert_eq!(config["spec"]["serviceLoadBalancerAggregation"], "Disabled");
    assert!(config["spec"].get("programClusterRoutes").is_none());
    let border = doc(&r, "BGPPeer", "border-local-as");
    assert_eq!(border["spec"]["localASNumber"], 65636, "asdot 1.100");
    assert_eq!(border["spec"]["nextHopMode"], "Self");
    let up = doc(&r, "BGPPeer", "upstream-local-as");
    assert_eq!(up["spec"]["localASNumber"], 65010);
    assert_eq!(up["spec"]["nextHopMode"], "Keep");
    let rr = doc(&r, "BGPPeer", "peer-with-rr");
    assert_eq!(rr["spec"]["reversePeering"], "Manual");
    assert_eq!(rr["spec"]["nextHopMode"], "Self");
    assert_eq!(
        doc(&r, "BGPPeer", "peer-from-rr")["spec"]["reversePeering"],
        "Manual"
    );
    assert_eq!(
        findings(&r),
        want(&[
            ("default", "spec.programClusterRoutes", Dropped),
            ("border-local-as", "spec.localASNumber", Converted),
            (
                "tor-policy",
                "spec.importV4[0].operations[0].setPriority",
                Dropped,
            ),
        ])
    );
    let pcr = r
        .findings
        .iter()
        .find(|f| f.path == "spec.programClusterRoutes")
        .unwrap();
    assert!(
        pcr.reason.contains("programs every pod route itself"),
        "{pcr}"
    );
    // The peers as the agent reads them.
    for d in r.documents.iter().filter(|d| d["kind"] == "BGPPeer") {
        let spec: serval::resources::BGPPeerSpec =
            serde_json::from_value(d["spec"].clone()).unwrap();
        assert!(spec.check().is_empty(), "{d}: {:?}", spec.check());
    }
    let border: serval::resources::BGPPeerSpec =
        serde_json::from_value(border["spec"].clone()).unwrap();
    assert_eq!(border.local_as_number, Some(65636));
    assert_eq!(border.next_hop(), bgp::rib::NextHopMode::SelfAlways);
}

#[test]
fn pools_in_every_calico_form() {
    use Severity::*;
    let r = import("ippools.yaml");
    passes_the_crds(&r);
    let v4 = doc(&r, "IPPool", "default-ipv4-ippool");
    assert_eq!(v4["spec"]["ipipMode"], "CrossSubnet");
    assert_eq!(v4["spec"]["natOutgoing"], true);
    let v6 = doc(&r, "IPPool", "default-ipv6-ippool");
    assert_eq!(v6["spec"]["blockSize"], 122, "Calico's IPv6 default");
    assert_eq!(v6["spec"]["vxlanMode"], "Always");
    let legacy = doc(&r, "IPPool", "legacy-pool");
    assert_eq!(legacy["spec"]["ipipMode"], "CrossSubnet");
    assert_eq!(legacy["spec"]["natOutgoing"], true);
    assert_eq!(legacy["spec"]["blockSize"], 26);
    let manual = doc(&r, "IPPool", "reserved-for-gateways");
    assert_eq!(manual["spec"]["assignmentMode"], "Manual");
    assert!(manual["spec"].get("disabled").is_none());
    assert_eq!(manual["spec"]["disableBGPExport"], true);
    let team = doc(&r, "IPPool", "team-a");
    assert_eq!(team["spec"]["namespaceSelector"], "team == 'a'");
    let ipam = doc(&r, "IPAMConfig", "default");
    assert_eq!(ipam["spec"]["maxBlocksPerHost"], 8);
    assert_eq!(
        findings(&r),
        want(&[
            ("legacy-pool", "spec.ipip", Converted),
            ("legacy-pool", "spec.nat-outgoing", Converted),
        ])
    );
    // The pools are valid for the allocator too.
    for d in r.documents.iter().filter(|d| d["kind"] == "IPPool") {
        let mut spec = d["spec"].clone();
        spec["name"] = d["metadata"]["name"].clone();
        let p: ipam::model::IpPool = serde_json::from_value(spec).unwrap();
        p.validate().unwrap();
    }
}

#[test]
fn what_cannot_come_over_is_reported_and_nothing_wider_is_written() {
    use Severity::*;
    let r = import("unsupported.yaml");
    assert!(r.incomplete());
    let names: Vec<&str> = r
        .documents
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["still-fine"]);
    passes_the_crds(&r);
    assert_eq!(
        findings(&r),
        want(&[
            ("default", "", Skipped),
            ("deny-all", "", Skipped),
            ("workload-peers", "spec.localWorkloadSelector", Skipped),
            ("only-metric-512", "spec.importV4[0].priority", Skipped),
            ("by-name", "spec.peerIP", Error),
            ("still-fine", "spec.restartMode", Dropped),
            ("still-fine", "spec.birdGatewayMode", Dropped),
        ])
    );
    let policy = r
        .findings
        .iter()
        .find(|f| f.document.contains("deny-all"))
        .unwrap();
    assert!(policy.reason.contains("network policy"), "{policy}");
    let host = r.findings.iter().find(|f| f.path == "spec.peerIP").unwrap();
    assert!(host.reason.contains("tor.example.net"), "{host}");
}

#[test]
fn the_command_writes_per_kind_files_and_reports_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let serval = env!("CARGO_BIN_EXE_serval");
    let out = Command::new(serval)
        .args(["import", "calico", "-o", dir.path().to_str().unwrap()])
        .arg("-f")
        .arg(fixture("tor-peering.yaml"))
        .arg("-f")
        .arg(fixture("ippools.yaml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "tor-peering.yaml: document 1 (BGPConfiguration default): spec.bindMode: not carried:"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("imported 10 resource(s)"), "{stderr}");
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "bgpconfigurations.yaml",
            "bgpfilters.yaml",
            "bgppeers.yaml",
            "ipamconfigs.yaml",
            "ippools.yaml"
        ]
    );
    // What was written is what `serval apply -f` reads.
    let peers = std::fs::read_to_string(dir.path().join("bgppeers.yaml")).unwrap();
    let parsed = serval::resources::document::parse(&peers).unwrap();
    assert_eq!(parsed.len(), 2);

    // Incomplete input: the good documents on stdout, a failing exit.
    let out = Command::new(serval)
        .args(["import", "calico", "-f"])
        .arg(fixture("unsupported.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("name: still-fine") && !stdout.contains("by-name"),
        "{stdout}"
    );

    // --strict refuses dropped fields too.
    let out = Command::new(serval)
        .args(["import", "calico", "--strict", "-f"])
        .arg(fixture("tor-peering.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn kube_controllers_assign_ips_becomes_load_balancer_assign_ips() {
    use Severity::*;
    // Beside the input's BGPConfiguration: the field joins it, one `default` comes out.
    let r = import("kube-controllers.yaml");
    passes_the_crds(&r);
    assert!(!r.incomplete(), "{:#?}", r.findings);
    assert_eq!(r.documents.len(), 1, "{:#?}", r.documents);
    let config = doc(&r, "BGPConfiguration", "default");
    assert_eq!(
        config["spec"]["loadBalancerAssignIPs"],
        "RequestedServicesOnly"
    );
    assert_eq!(config["spec"]["asNumber"], 64512);
    assert_eq!(
        config["spec"]["serviceLoadBalancerIPs"],
        json!([{"cidr": "198.51.100.0/24"}])
    );
    let spec: serval::resources::BGPConfigurationSpec =
        serde_json::from_value(config["spec"].clone()).unwrap();
    assert_eq!(
        spec.load_balancer_assign_ips,
        Some(serval::resources::bgp_configuration::AssignIps::RequestedServicesOnly)
    );
    assert_eq!(
        findings(&r),
        want(&[
            (
                "default",
                "spec.controllers.loadBalancer.assignIPs",
                Converted
            ),
            ("default", "spec.controllers.node", Dropped),
            ("default", "spec.etcdV3CompactionPeriod", Dropped),
            ("default", "spec.healthChecks", Dropped),
            ("default", "spec.logSeverityScreen", Dropped),
            ("default", "spec.prometheusMetricsPort", Dropped),
        ])
    );
    let kind = r
        .findings
        .iter()
        .find(|f| f.path == "spec.controllers.loadBalancer.assignIPs")
        .unwrap();
    assert!(
        kind.document.contains("KubeControllersConfiguration")
            && kind
                .reason
                .contains("loadBalancerAssignIPs of BGPConfiguration default"),
        "{kind}"
    );

    // The Kubernetes datastore's own object as JSON, alone: a `default` with the field only.
    let r = import("kube-controllers-crd.json");
    passes_the_crds(&r);
    assert_eq!(r.documents.len(), 1, "{:#?}", r.documents);
    assert_eq!(
        doc(&r, "BGPConfiguration", "default")["spec"],
        json!({"loadBalancerAssignIPs": "AllServices"})
    );
    assert_eq!(
        findings(&r),
        want(&[
            (
                "default",
                "spec.controllers.loadBalancer.assignIPs",
                Converted
            ),
            ("default", "spec.controllers.node", Dropped),
            ("default", "spec.controllers.policyMigration", Dropped),
            ("default", "spec.healthChecks", Dropped),
            ("default", "spec.logSeverityScreen", Dropped),
        ])
    );

    // Without the LoadBalancer controller nothing is written, and that is said.
    let text = "apiVersion: projectcalico.org/v3\nkind: KubeControllersConfiguration\n\
        metadata: {name: default}\nspec: {controllers: {node: {syncLabels: Enabled}}}\n";
    let r = calico::import(text, "x").unwrap();
    assert!(r.documents.is_empty());
    assert_eq!(
        findings(&r),
        want(&[
            ("default", "spec.controllers.loadBalancer", Dropped),
            ("default", "spec.controllers.node", Dropped),
        ])
    );
    // A value serval does not know is an error, not output.
    let r = calico::import(
        &text.replace(
            "{node: {syncLabels: Enabled}}",
            "{loadBalancer: {assignIPs: Some}}",
        ),
        "x",
    )
    .unwrap();
    assert!(r.documents.is_empty() && r.incomplete(), "{:#?}", r);

    // Two files on the command line: still one BGPConfiguration default.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_serval"))
        .args(["import", "calico", "-o", dir.path().to_str().unwrap()])
        .arg("-f")
        .arg(fixture("kube-controllers-crd.json"))
        .arg("-f")
        .arg(fixture("tor-peering.yaml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let configs = std::fs::read_to_string(dir.path().join("bgpconfigurations.yaml")).unwrap();
    let parsed = serval::resources::document::parse(&configs).unwrap();
    assert_eq!(parsed.len(), 1, "{configs}");
    assert!(
        configs.contains("loadBalancerAssignIPs: AllServices"),
        "{configs}"
    );
}
