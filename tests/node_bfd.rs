//! BFD on the node-to-node mesh, end to end: three agents in namespaces on one file store
//! (n1 and n2 on one subnet, n3 behind a router), a `BFDProfile` of 100 ms × 3 named by
//! the `default` BGPConfiguration's `nodeMeshBFDProfile`.
//!
//! - Every mesh session comes up with BFD Up at the profile's intervals (single hop
//!   between n1 and n2, multihop across the router), as `serval node status --json`,
//!   its text view and the metrics show it.
//! - n2 is cut off: nftables in its namespace drops everything on its links (nothing is
//!   closed, no link goes down). n2's block leaves n1's and n3's kernels within a second,
//!   and their status says why (BFD Down, Control Detection Time Expired).
//! - The cut is lifted: the sessions and the route come back.
//! - The mesh then names a profile that does not exist: BFD goes off on every session
//!   without a BGP reset, and the status names the missing profile.
//!
//! Needs root, iproute2, nftables and curl.

use std::process::Command;
use std::time::{Duration, Instant};

mod node_support;

use node_support::{
    apply, block_of, has_problem, http, run, serval_bin, store_with_pool, three_nodes, wait_route,
    Node,
};
use serval_integration::{scenario, tools, wait_for, Error};

/// The issue's target: a silent node's routes are gone from the other nodes within a
/// second of the cut.
const DETECTION_TARGET: Duration = Duration::from_secs(1);

const RESOURCES: &str = "\
apiVersion: serval.dev/v1
kind: BFDProfile
metadata:
  name: fast
spec:
  receiveInterval: 100
  transmitInterval: 100
  detectMultiplier: 3
---
apiVersion: serval.dev/v1
kind: BGPConfiguration
metadata:
  name: default
spec:
  nodeMeshBFDProfile: fast
";

const CUT_TABLE: &str = "serval_test_cut";

/// Drops everything on `n`'s links, in, out and through; loopback spared. The agent and
/// its sockets stay as they are: to the others the node has gone silent.
fn cut(n: &Node) -> Result<(), Error> {
    let t = CUT_TABLE;
    n.ns.exec(&["nft", "add", "table", "inet", t])?;
    for (chain, hook, lo) in [
        ("input", "input", "iifname \"lo\" accept"),
        ("output", "output", "oifname \"lo\" accept"),
        ("forward", "forward", ""),
    ] {
        n.ns.exec(&[
            "nft",
            &format!(
                "add chain inet {t} {chain} {{ type filter hook {hook} priority -400 ; policy drop ; }}"
            ),
        ])?;
        if !lo.is_empty() {
            n.ns.exec(&["nft", &format!("add rule inet {t} {chain} {lo}")])?;
        }
    }
    Ok(())
}

fn restore(n: &Node) -> Result<(), Error> {
    n.ns.exec(&["nft", "delete", "table", "inet", CUT_TABLE])
        .map(drop)
}

/// Every peer of `status` Established with BFD Up at 100 ms both ways.
fn mesh_with_bfd_up(status: &serde_json::Value, peers: usize) -> bool {
    let Some(ps) = status["peers"].as_array() else {
        return false;
    };
    ps.len() == peers
        && ps.iter().all(|p| {
            p["state"] == "Established"
                && p["bfd"]["state"] == "Up"
                && p["bfd"]["tx_interval_ms"] == 100
                && p["bfd"]["rx_interval_ms"] == 100
        })
}

fn peer<'a>(status: &'a serde_json::Value, addr: &str) -> Option<&'a serde_json::Value> {
    status["peers"]
        .as_array()?
        .iter()
        .find(|p| p["address"] == addr)
}

#[test]
fn mesh_bfd_takes_a_silent_nodes_routes_out_within_a_second() {
    scenario("node-bfd", |test| {
        tools::require_all(&["ip", "nft", "curl"])?;
        let store = store_with_pool(test, &[])?;
        apply(&store, test, "bfd.yaml", RESOURCES)?;

        let (nodes, _router, _segment) = three_nodes(test)?;
        let [mut n1, mut n2, mut n3] = nodes;
        for n in [&mut n1, &mut n2, &mut n3] {
            n.start(&store)?;
        }
        let mut blocks = Vec::new();
        for n in [&mut n1, &mut n2, &mut n3] {
            blocks.push(block_of(n.add_pod(&store)?));
        }
        let n2_block = blocks[1].clone();
        for n in [&n1, &n2, &n3] {
            wait_for(
                Duration::from_secs(40),
                &format!("{}: mesh Established with BFD Up at 100 ms", n.name),
                || n.status(),
                |s| mesh_with_bfd_up(s, 2),
            )?;
            for b in &blocks {
                wait_route(n, b, true, Instant::now(), Duration::from_secs(20))?;
            }
        }
        let s1 = n1.status()?;
        let single = peer(&s1, "192.0.2.12").map(|p| p["bfd"]["multihop"].clone());
        let multi = peer(&s1, "198.18.1.13").map(|p| p["bfd"]["multihop"].clone());
        assert_eq!(single, Some(serde_json::json!(false)), "n1 ↔ n2: one link");
        assert_eq!(multi, Some(serde_json::json!(true)), "n1 ↔ n3: routed");
        assert_eq!(
            peer(&s1, "192.0.2.12").map(|p| p["bfd"]["detection_time_ms"].clone()),
            Some(serde_json::json!(300))
        );
        let text = run(Command::new(serval_bin()).args([
            "node",
            "status",
            "--socket",
            &n1.socket().display().to_string(),
        ]))?;
        assert!(
            text.contains("BFD") && text.contains("Up tx 100ms rx 100ms x3"),
            "{text}"
        );
        let (code, metrics) = http(&n1.ns, "/metrics")?;
        assert_eq!(code, 200);
        for want in [
            r#"serval_bfd_session_up{peer="192.0.2.12",peer_type="mesh"} 1"#,
            r#"serval_bfd_session_up{peer="198.18.1.13",peer_type="mesh"} 1"#,
            r#"serval_bfd_session_state{peer="192.0.2.12",peer_type="mesh",state="Up"} 1"#,
            r#"serval_bfd_detection_time_seconds{peer="192.0.2.12",peer_type="mesh"} 0.3"#,
        ] {
            assert!(metrics.contains(want), "{want} missing from\n{metrics}");
        }

        // n2 goes silent.
        let t0 = Instant::now();
        cut(&n2)?;
        for n in [&n1, &n3] {
            let gone = wait_route(n, &n2_block, false, t0, DETECTION_TARGET)?;
            eprintln!(
                "{}: n2's block {n2_block} withdrawn {:.0} ms after the cut",
                n.name,
                gone.as_secs_f64() * 1000.0
            );
        }
        for (n, n2_addr) in [(&n1, "192.0.2.12"), (&n3, "192.0.2.12")] {
            let s = wait_for(
                Duration::from_secs(5),
                &format!("{}: the session with n2 down by BFD", n.name),
                || n.status(),
                |s| peer(s, n2_addr).is_some_and(|p| p["bfd"]["state"] != "Up"),
            )?;
            let p = peer(&s, n2_addr).cloned().unwrap_or_default();
            assert_ne!(p["state"], "Established", "{p}");
            assert_eq!(
                p["bfd"]["local_diag"], "control detection time expired",
                "{p}"
            );
            assert!(
                p["last_error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("BFD down")),
                "{p}"
            );
        }
        // The sessions that did not lose their peer stayed up.
        let s1 = n1.status()?;
        assert_eq!(
            peer(&s1, "198.18.1.13").map(|p| p["state"].clone()),
            Some(serde_json::json!("Established")),
            "n1 ↔ n3 untouched"
        );

        // The cut lifted: sessions, BFD and the route come back.
        restore(&n2)?;
        for n in [&n1, &n3] {
            wait_for(
                Duration::from_secs(60),
                &format!("{}: mesh back with BFD Up", n.name),
                || n.status(),
                |s| mesh_with_bfd_up(s, 2),
            )?;
            wait_route(n, &n2_block, true, Instant::now(), Duration::from_secs(20))?;
        }

        // The mesh naming a profile that does not exist: the sessions stay up without
        // BFD (no BGP reset), and the status says why.
        let flaps = |s: &serde_json::Value| -> Vec<serde_json::Value> {
            s["peers"]
                .as_array()
                .map(|ps| ps.iter().map(|p| p["flaps"].clone()).collect())
                .unwrap_or_default()
        };
        let before = flaps(&n1.status()?);
        apply(
            &store,
            test,
            "gone.yaml",
            "apiVersion: serval.dev/v1\nkind: BGPConfiguration\nmetadata:\n  name: default\n\
             spec:\n  nodeMeshBFDProfile: gone\n",
        )?;
        let s = wait_for(
            Duration::from_secs(20),
            "n1: BFD off on the mesh, the missing profile reported",
            || n1.status(),
            |s| {
                has_problem(s, "BFDProfile gone does not exist")
                    && s["peers"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().all(|p| p["bfd"].is_null()))
            },
        )?;
        assert!(
            s["peers"]
                .as_array()
                .is_some_and(|ps| ps.iter().all(|p| p["state"] == "Established")),
            "{s}"
        );
        assert_eq!(flaps(&s), before, "turning BFD off reset no session");
        Ok(())
    });
}
