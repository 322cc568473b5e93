//! The CRD manifests: `crds/` and the chart's copy are what the types generate (the CI
//! diff check), the example manifests pass both the CRD schemas (with their CEL rules)
//! and the agent's typed parsing, and bad manifests fail at the field that is wrong.

#[path = "crds/validate.rs"]
mod validate;

#[path = "crds/cases.rs"]
mod cases;

use std::path::{Path, PathBuf};
use std::process::Command;

use cases::sample;
use serde_json::Value;
use validate::Crds;

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
    assert_eq!(crds.by_kind.len(), 12);
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

#[test]
fn bad_manifests_fail_at_the_field_that_is_wrong() {
    let crds = crds();
    let mut failures = Vec::new();
    for case in cases::invalid() {
        let v = crds.check(&case.doc(), None);
        if !v
            .iter()
            .any(|x| x.path == case.path && x.source == case.source)
        {
            failures.push(format!(
                "{}: want {:?} at {:?}, got {v:#?}",
                case.describe(),
                case.source,
                case.path
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The samples written for kinds and fields no example shows are valid too.
#[test]
fn extra_samples_pass_the_crds() {
    let crds = crds();
    for doc in cases::extra_samples() {
        let v = crds.check(&doc, None);
        assert!(
            v.is_empty(),
            "{} {}: {v:#?}",
            doc["kind"],
            doc["metadata"]["name"]
        );
    }
}

#[test]
fn bad_updates_fail_at_the_field_that_is_wrong() {
    let crds = crds();
    for case in cases::invalid_updates() {
        let old = case.doc_before();
        assert!(
            crds.check(&old, Some(&old)).is_empty(),
            "{}: unchanged",
            case.describe()
        );
        let v = crds.check(&case.doc(), Some(&old));
        assert!(
            v.iter()
                .any(|x| x.path == case.path && x.source == case.source),
            "{}: want {:?} at {:?}, got {v:#?}",
            case.describe(),
            case.source,
            case.path
        );
        assert!(
            crds.check(&case.doc(), None).is_empty(),
            "{}: fine on create",
            case.describe()
        );
    }
}

/// Every CEL rule of the CRDs is broken by at least one case, so a new rule cannot
/// go untested (here and against the real API server).
#[test]
fn every_cel_rule_has_a_case() {
    let uncovered = cases::uncovered_rules(&crds());
    assert!(
        uncovered.is_empty(),
        "CEL rules no case in tests/crds/cases.rs breaks:\n{}",
        uncovered.join("\n")
    );
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
