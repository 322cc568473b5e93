//! `serval apply/get/delete` and the start-up checks of `serval node run`, run as a user
//! would against a temporary file store.

mod cli_support;

use std::path::Path;
use std::process::Command;

use cli_support::TempDir;

fn ok(args: &[&str], store: &Path) -> String {
    cli_support::ok(store, args)
}

fn fails(args: &[&str], store: Option<&Path>) -> String {
    cli_support::fails(store, args)
}

const GOOD: &str = "\
apiVersion: serval.dev/v1
kind: BGPConfiguration
metadata:
  name: default
spec:
  nodeToNodeMeshEnabled: false
  asNumber: 64513
---
apiVersion: serval.dev/v1
kind: BGPPeer
metadata:
  name: tor-1
  labels:
    rack: r1
spec:
  peerIP: 192.0.2.254
  asNumber: 65000
  nodeSelector: rack == 'r1'
";

#[test]
fn apply_get_delete_round_trip() {
    let dir = TempDir::new("apply");
    let store = dir.0.join("ipam.json");
    let file = dir.0.join("bgp.yaml");
    std::fs::write(&file, GOOD).unwrap();
    let out = ok(&["apply", "-f", file.to_str().unwrap()], &store);
    assert_eq!(
        out,
        "BGPConfiguration default created\nBGPPeer tor-1 created\n"
    );
    let out = ok(&["apply", "-f", file.to_str().unwrap()], &store);
    assert_eq!(
        out,
        "BGPConfiguration default unchanged\nBGPPeer tor-1 unchanged\n"
    );
    std::fs::write(&file, GOOD.replace("65000", "65001")).unwrap();
    let out = ok(&["apply", "-f", file.to_str().unwrap()], &store);
    assert!(out.contains("BGPPeer tor-1 configured"), "{out}");

    let json: serde_json::Value =
        serde_json::from_str(&ok(&["get", "bgppeer", "tor-1", "-o", "json"], &store)).unwrap();
    assert_eq!(json["apiVersion"], "serval.dev/v1");
    assert_eq!(json["kind"], "BGPPeer");
    assert_eq!(json["metadata"]["labels"]["rack"], "r1");
    assert_eq!(json["spec"]["asNumber"], 65001);
    assert_eq!(json["spec"]["peerIP"], "192.0.2.254");
    // What `get -o yaml` prints applies again unchanged.
    let yaml = ok(&["get", "bgppeers", "-o", "yaml"], &store);
    let again = dir.0.join("again.yaml");
    std::fs::write(&again, &yaml).unwrap();
    let out = ok(&["apply", "-f", again.to_str().unwrap()], &store);
    assert_eq!(out, "BGPPeer tor-1 unchanged\n", "{yaml}");
    let table = ok(&["get", "bgpconfig"], &store);
    assert!(table.contains("default"), "{table}");

    assert!(ok(&["delete", "bgppeer", "tor-1"], &store).contains("deleted"));
    let e = fails(&["get", "bgppeer", "tor-1"], Some(&store));
    assert!(e.contains("BGPPeer tor-1 not found"), "{e}");
    let e = fails(&["delete", "bgppeer", "tor-1"], Some(&store));
    assert!(e.contains("not found"), "{e}");
    let e = fails(&["get", "widgets"], Some(&store));
    assert!(e.contains("not a serval resource kind"), "{e}");
}

#[test]
fn a_bad_document_writes_nothing_and_names_the_field() {
    let dir = TempDir::new("bad");
    let store = dir.0.join("ipam.json");
    let file = dir.0.join("bad.yaml");
    let bad = format!(
        "{GOOD}---\napiVersion: serval.dev/v1\nkind: BGPPeer\nmetadata:\n  name: tor-2\nspec:\n  peerIP: 192.0.2.300\n  asNumber: 65000\n"
    );
    std::fs::write(&file, bad).unwrap();
    let e = fails(&["apply", "-f", file.to_str().unwrap()], Some(&store));
    assert!(e.contains("document 3 (BGPPeer tor-2)"), "{e}");
    assert!(e.contains("spec.peerIP"), "{e}");
    assert!(e.contains("192.0.2.300"), "{e}");
    assert!(e.contains("nothing applied"), "{e}");
    let table = ok(&["get", "bgppeer"], &store);
    assert!(
        !table.contains("tor-1"),
        "the good documents were not written: {table}"
    );
}

#[test]
fn kubernetes_datastore_points_at_kubectl() {
    let dir = TempDir::new("kube");
    let file = dir.0.join("bgp.yaml");
    std::fs::write(&file, GOOD).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_serval"))
        .args([
            "apply",
            "-f",
            file.to_str().unwrap(),
            "--datastore",
            "kubernetes",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("kubectl apply"), "{e}");
}

#[test]
fn node_run_refuses_bad_configuration_before_changing_anything() {
    let dir = TempDir::new("badcfg");
    let nodename = dir.0.join("nodename");
    let socket = dir.0.join("node.sock");
    let e = fails(
        &[
            "node",
            "run",
            "--node",
            "n1",
            "--as-number",
            "0",
            "--router-id",
            "1.2.3",
            "--ip-autodetection-method",
            "nearest",
            "--metrics-addr",
            "localhost",
            "--nodename-file",
            nodename.to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
        ],
        None,
    );
    for field in [
        "as-number",
        "router-id",
        "ip-autodetection-method",
        "metrics-addr",
    ] {
        assert!(e.contains(field), "{field} not named in: {e}");
    }
    assert!(!nodename.exists(), "nothing written on a bad configuration");
    assert!(!socket.exists(), "no socket bound on a bad configuration");
    let cfg = dir.0.join("node.toml");
    std::fs::write(&cfg, "node-name = \"n1\"\nas-nmber = 64512\n").unwrap();
    let e = fails(&["node", "run", "--config", cfg.to_str().unwrap()], None);
    assert!(e.contains("as-nmber"), "{e}");
}
