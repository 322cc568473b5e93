//! `serval ipam` and `serval pool` run as a user would, against a temporary file store.

mod cli_support;

use std::path::Path;

use cli_support::{json, ok, TempDir};

fn fails(store: &Path, args: &[&str], why: &str) -> String {
    let err = cli_support::fails(Some(store), args);
    assert!(
        err.contains(why),
        "serval {args:?}: expected {why:?} in {err}"
    );
    err
}

#[test]
fn assign_show_release_round_trip() {
    let dir = TempDir::new("round-trip");
    let store = dir.0.join("ipam.json");
    ok(&store, &["pool", "add", "10.65.0.0/16", "--name", "pods"]);
    ok(&store, &["pool", "add", "fd00:65::/64", "--name", "pods6"]);
    let pools = json(&ok(&store, &["pool", "list", "--json"]));
    assert_eq!(pools.as_array().map(Vec::len), Some(2));
    assert_eq!(pools[0]["blockSize"], 26);
    assert_eq!(pools[1]["blockSize"], 122);

    let got = json(&ok(
        &store,
        &[
            "ipam", "assign", "--node", "node-1", "--handle", "web", "--num", "2", "--num6", "1",
            "--json",
        ],
    ));
    let v4: Vec<String> = serde_json::from_value(got["v4"].clone()).expect("v4 list");
    assert_eq!(v4.len(), 2);
    assert_eq!(got["v6"].as_array().map(Vec::len), Some(1));
    // Asking again for the same handle returns the same addresses.
    let again = json(&ok(
        &store,
        &[
            "ipam", "assign", "--node", "node-1", "--handle", "web", "--num", "2", "--num6", "1",
            "--json",
        ],
    ));
    assert_eq!(got, again);
    let gw = ok(
        &store,
        &[
            "ipam",
            "assign",
            "--node",
            "node-2",
            "--handle",
            "gateway",
            "--ip",
            "10.65.200.1",
        ],
    );
    assert_eq!(gw.trim(), "10.65.200.1");
    fails(
        &store,
        &[
            "ipam",
            "assign",
            "--node",
            "node-2",
            "--handle",
            "other",
            "--ip",
            "10.65.200.1",
        ],
        "already allocated to handle gateway",
    );

    let show = json(&ok(&store, &["ipam", "show", "--show-blocks", "--json"]));
    assert_eq!(show["pools"][0]["inUse"], 3);
    assert_eq!(show["pools"][1]["inUse"], 1);
    let nodes: Vec<&str> = show["pools"][0]["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .filter_map(|b| b["node"].as_str())
        .collect();
    assert!(
        nodes.contains(&"node-1") && nodes.contains(&"node-2"),
        "{nodes:?}"
    );
    let table = ok(&store, &["ipam", "show", "--show-blocks"]);
    assert!(
        table.contains("pods") && table.contains("node-1") && table.contains("10.65.200.0/26"),
        "{table}"
    );

    let check = json(&ok(&store, &["ipam", "check", "--json"]));
    assert_eq!(check["problems"].as_array().map(Vec::len), Some(0));

    let rel = json(&ok(&store, &["ipam", "release", "--ip", &v4[0], "--json"]));
    assert_eq!(rel["released"][0]["ip"], v4[0].as_str());
    assert_eq!(rel["released"][0]["handle"], "web");
    let rel = json(&ok(
        &store,
        &["ipam", "release", "--handle", "web", "--json"],
    ));
    assert_eq!(rel["released"].as_array().map(Vec::len), Some(2));
    let show = json(&ok(&store, &["ipam", "show", "--json"]));
    assert_eq!(show["pools"][0]["inUse"], 1);
    assert_eq!(show["pools"][1]["inUse"], 0);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let dir = TempDir::new("bad-input");
    let store = dir.0.join("ipam.json");
    ok(&store, &["pool", "add", "10.65.0.0/16", "--name", "pods"]);
    let before = std::fs::read(&store).expect("store file");
    fails(
        &store,
        &["pool", "add", "10.65.128.0/17"],
        "overlaps pool pods",
    );
    fails(&store, &["pool", "add", "10.0.0.0/8"], "overlaps pool pods");
    fails(
        &store,
        &["pool", "add", "10.66.0.0/28"],
        "smaller than its block size",
    );
    fails(
        &store,
        &["pool", "add", "10.67.0.0/16", "--block-size", "19"],
        "out of range",
    );
    fails(
        &store,
        &["pool", "add", "10.68.0.1/16"],
        "did you mean 10.68.0.0/16",
    );
    fails(
        &store,
        &["pool", "add", "10.69.0.0/16", "--node-selector", "zone in"],
        "invalid selector",
    );
    fails(
        &store,
        &[
            "ipam",
            "assign",
            "--node",
            "n",
            "--handle",
            "h",
            "--ip",
            "192.168.1.1",
        ],
        "not inside any IP pool",
    );
    fails(
        &store,
        &["ipam", "release", "--ip", "192.168.1.1"],
        "not inside any IP pool",
    );
    fails(
        &store,
        &["ipam", "assign", "--node", "Bad_Node", "--handle", "h"],
        "invalid node name",
    );
    assert_eq!(
        std::fs::read(&store).expect("store file"),
        before,
        "a refused command changed the store"
    );
    let pools = json(&ok(&store, &["pool", "list", "--json"]));
    assert_eq!(pools.as_array().map(Vec::len), Some(1));
}

#[test]
fn corrupt_store_is_reported_and_left_untouched() {
    let dir = TempDir::new("corrupt");
    let store = dir.0.join("ipam.json");
    ok(&store, &["pool", "add", "10.65.0.0/16", "--name", "pods"]);
    let mut text = std::fs::read_to_string(&store).expect("store file");
    text.truncate(text.len() / 2);
    std::fs::write(&store, &text).expect("damage");
    let err = fails(&store, &["ipam", "show"], "is corrupt");
    assert!(
        err.contains(&store.display().to_string()),
        "the error names the file: {err}"
    );
    fails(
        &store,
        &["ipam", "assign", "--node", "n", "--handle", "h"],
        "is corrupt",
    );
    fails(&store, &["pool", "add", "10.70.0.0/16"], "is corrupt");
    assert_eq!(
        std::fs::read_to_string(&store).expect("store file"),
        text,
        "the corrupt file was changed"
    );
}

#[test]
fn pool_delete_refuses_a_pool_in_use() {
    let dir = TempDir::new("delete");
    let store = dir.0.join("ipam.json");
    ok(&store, &["pool", "add", "10.65.0.0/16", "--name", "pods"]);
    ok(&store, &["ipam", "assign", "--node", "n", "--handle", "h"]);
    fails(
        &store,
        &["pool", "delete", "pods"],
        "still has 1 allocated addresses",
    );
    ok(&store, &["ipam", "release", "--handle", "h"]);
    ok(&store, &["pool", "delete", "pods"]);
    let show = json(&ok(&store, &["ipam", "show", "--json"]));
    assert_eq!(show["pools"].as_array().map(Vec::len), Some(0));
    assert_eq!(show["orphanBlocks"].as_array().map(Vec::len), Some(0));
}
