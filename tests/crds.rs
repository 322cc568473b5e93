//! The CRD manifests: `crds/` and the chart's copy are what the types generate (the CI
//! diff check), the example manifests pass both the CRD schemas (with their CEL rules)
//! and the agent's typed parsing, and bad manifests fail at the field that is wrong.

#[path = "crds/validate.rs"]
mod validate;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use validate::{Crds, Source};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn crds() -> Crds {
    validate::load(&root().join("crds"))
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

#[test]
fn crd_directories_are_what_the_types_generate() {
    let files = serval::crds::files().unwrap();
    for dir in serval::crds::OUT_DIRS {
        let diffs = serval::crds::compare(&root().join(dir), &files).unwrap();
        let listing: Vec<String> = diffs.iter().map(ToString::to_string).collect();
        assert!(
            diffs.is_empty(),
            "{dir} is stale; run `cargo run -- crds` and commit:\n{}",
            listing.join("\n")
        );
    }
}

#[test]
fn serval_crds_check_exits_non_zero_on_a_stale_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let serval = env!("CARGO_BIN_EXE_serval");
    let check = || {
        Command::new(serval)
            .args(["crds", "--check", "--out", out])
            .output()
            .unwrap()
    };
    let first = check();
    assert!(!first.status.success(), "an empty directory passed --check");
    assert!(
        String::from_utf8_lossy(&first.stderr).contains("serval.dev_bgppeers.yaml: missing"),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let write = Command::new(serval)
        .args(["crds", "--out", out])
        .output()
        .unwrap();
    assert!(write.status.success());
    assert!(check().status.success());
    let f = dir.path().join("serval.dev_ippools.yaml");
    let text = std::fs::read_to_string(&f).unwrap();
    std::fs::write(&f, text.replace("maximum: 128", "maximum: 129")).unwrap();
    let stale = check();
    assert!(!stale.status.success());
    let err = String::from_utf8_lossy(&stale.stderr);
    assert!(
        err.contains("serval.dev_ippools.yaml:") && err.contains("maximum: 129"),
        "{err}"
    );
}

#[test]
fn every_rule_parses_and_names_real_fields() {
    let crds = crds();
    assert_eq!(crds.by_kind.len(), 10);
    let mut problems = Vec::new();
    let mut rules = 0;
    for (kind, (_, schema)) in &crds.by_kind {
        problems.extend(validate::rule_problems(kind, schema));
        rules += serval::crds::schema::cel_rules(schema).len();
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(rules >= 20, "only {rules} CEL rules");
}

/// Every example manifest: valid for the API server and for the agent.
#[test]
fn examples_pass_the_crds_and_the_typed_parsing() {
    let crds = crds();
    let dir = root().join("examples/resources");
    let mut kinds = std::collections::BTreeSet::new();
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        for doc in documents(&path) {
            let label = format!(
                "{}: {} {}",
                path.display(),
                doc["kind"],
                doc["metadata"]["name"]
            );
            let v = crds.check(&doc, None);
            assert!(v.is_empty(), "{label}: {v:#?}");
            typed_check(&doc).unwrap_or_else(|e| panic!("{label}: {e}"));
            kinds.insert(doc["kind"].as_str().unwrap().to_owned());
            count += 1;
        }
    }
    for k in [
        "BGPConfiguration",
        "BGPPeer",
        "BGPFilter",
        "IPPool",
        "IPAMConfig",
        "ServalNode",
        "ServalNodeStatus",
    ] {
        assert!(kinds.contains(k), "no example of {k}");
    }
    assert!(count >= 12, "{count}");
}

/// The agent's own parsing of a manifest.
fn typed_check(doc: &Value) -> Result<(), String> {
    let text = serde_yaml::to_string(doc).unwrap();
    match doc["kind"].as_str().unwrap_or_default() {
        "IPPool" => {
            let mut spec = doc["spec"].clone();
            spec["name"] = doc["metadata"]["name"].clone();
            let pool: ipam::model::IpPool =
                serde_json::from_value(spec).map_err(|e| e.to_string())?;
            pool.validate().map_err(|e| e.to_string())
        }
        "IPAMConfig" => serde_json::from_value::<ipam::crd::IPAMConfigSpec>(doc["spec"].clone())
            .map(drop)
            .map_err(|e| e.to_string()),
        "ServalNodeStatus" => {
            serde_yaml::from_str::<serval::resources::node_status::ServalNodeStatus>(&text)
                .map(drop)
                .map_err(|e| e.to_string())
        }
        _ => serval::resources::document::parse(&text)
            .map(drop)
            .map_err(|e| e.to_string()),
    }
}

fn sample(kind: &str) -> Value {
    let docs = documents(&root().join("examples/resources").join(match kind {
        "BGPPeer" => "bgp-peers.yaml",
        "BGPFilter" => "bgp-filter.yaml",
        "BGPConfiguration" => "bgp-configuration.yaml",
        "IPPool" | "IPAMConfig" => "ip-pools.yaml",
        "ServalNode" => "serval-node.yaml",
        "ServalNodeStatus" => "node-status.yaml",
        _ => unreachable!(),
    }));
    docs.into_iter().find(|d| d["kind"] == kind).unwrap()
}

/// Sets (Some) or removes (None) the field at a dotted path (`spec.exportV4.0.cidr`).
fn edit(doc: &mut Value, path: &str, value: Option<Value>) {
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

#[test]
fn bad_manifests_fail_at_the_field_that_is_wrong() {
    use serde_json::json;
    let crds = crds();
    // (kind, edits, expected path, which check)
    type Case = (
        &'static str,
        Vec<(&'static str, Option<Value>)>,
        &'static str,
        Source,
    );
    let cases: Vec<Case> = vec![
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
    ];
    let mut failures = Vec::new();
    for (kind, edits, path, source) in &cases {
        let mut doc = sample(kind);
        for (p, v) in edits {
            edit(&mut doc, p, v.clone());
        }
        let v = crds.check(&doc, None);
        if !v.iter().any(|x| x.path == *path && x.source == *source) {
            failures.push(format!(
                "{kind} {edits:?}: want {source:?} at {path:?}, got {v:#?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Transition rules (`oldSelf`) apply on update only.
#[test]
fn transition_rules_keep_pool_cidr_and_block_size() {
    let crds = crds();
    let old = sample("IPPool");
    let mut new = old.clone();
    assert!(
        crds.check(&new, Some(&old)).is_empty(),
        "an unchanged update"
    );
    new["spec"]["natOutgoing"] = Value::Bool(false);
    assert!(
        crds.check(&new, Some(&old)).is_empty(),
        "changing natOutgoing"
    );
    new["spec"]["cidr"] = Value::String("10.66.0.0/16".into());
    new["spec"]["blockSize"] = serde_json::json!(24);
    let v = crds.check(&new, Some(&old));
    let paths: Vec<&str> = v.iter().map(|x| x.path.as_str()).collect();
    assert_eq!(paths, ["spec.blockSize", "spec.cidr"], "{v:#?}");
    // On create there is no old object: the same manifest is fine.
    assert!(crds.check(&new, None).is_empty());
}
