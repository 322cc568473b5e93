//! `IPReservation` through the CLI against a file store: `serval apply` stores it, `serval
//! ipam assign` (the allocator the CNI plugin runs too) never hands out a reserved
//! address, a pool whose only free addresses are reserved is exhausted, and `serval ipam
//! check` reports an allocation that a later reservation covers.

mod cli_support;

use cli_support::{fails, json, ok, TempDir};

fn reservation(dir: &TempDir, name: &str, cidrs: &[&str]) -> std::path::PathBuf {
    let f = dir.0.join(format!("{name}.yaml"));
    let list = cidrs
        .iter()
        .map(|c| format!("    - {c}\n"))
        .collect::<String>();
    std::fs::write(
        &f,
        format!(
            "apiVersion: serval.dev/v1\nkind: IPReservation\nmetadata:\n  name: {name}\n\
             spec:\n  reservedCIDRs:\n{list}"
        ),
    )
    .unwrap();
    f
}

#[test]
fn reserved_addresses_are_never_assigned_and_exhaust_the_pool() {
    let dir = TempDir::new("reservation");
    let store = dir.0.join("store.json");
    // Four addresses in one block of /30.
    ok(
        &store,
        &[
            "pool",
            "add",
            "10.66.0.0/30",
            "--name",
            "tiny",
            "--block-size",
            "30",
        ],
    );
    let f = reservation(&dir, "gateways", &["10.66.0.0", "10.66.0.2/31"]);
    ok(&store, &["apply", "-f", f.to_str().unwrap()]);

    let got = json(&ok(
        &store,
        &[
            "ipam", "assign", "--node", "n1", "--handle", "a", "--num", "1", "--json",
        ],
    ));
    assert_eq!(got["v4"], serde_json::json!(["10.66.0.1"]), "{got}");
    // The other three are reserved: the pool is exhausted.
    let err = fails(
        Some(&store),
        &["ipam", "assign", "--node", "n1", "--handle", "b"],
    );
    assert!(err.contains("no IPv4 address available"), "{err}");
    let err = fails(
        Some(&store),
        &[
            "ipam",
            "assign",
            "--node",
            "n1",
            "--handle",
            "c",
            "--ip",
            "10.66.0.3",
        ],
    );
    assert!(err.contains("reserved by IPReservation gateways"), "{err}");
    let check = json(&ok(&store, &["ipam", "check", "--json"]));
    assert_eq!(check["problems"], serde_json::json!([]), "{check}");

    // Reserving the address handed out: check reports it and repairs nothing.
    let f = reservation(&dir, "later", &["10.66.0.1"]);
    ok(&store, &["apply", "-f", f.to_str().unwrap()]);
    let out = cli_support::serval(Some(&store), &["ipam", "check", "--repair"]);
    assert!(!out.status.success(), "a reserved address in use remains");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("10.66.0.1") && text.contains("IPReservation later"),
        "{text}"
    );
    assert!(!text.contains("repaired:"), "{text}");
    let show = json(&ok(&store, &["ipam", "show", "--json"]));
    assert_eq!(show["pools"][0]["inUse"], 1, "the owner keeps its address");

    // A reservation that does not parse is refused at the edge, naming the entry.
    let f = reservation(&dir, "bad", &["10.66.0.300"]);
    let err = fails(Some(&store), &["apply", "-f", f.to_str().unwrap()]);
    assert!(err.contains("reservedCIDRs[0]"), "{err}");
}
