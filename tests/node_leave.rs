//! A node leaves the cluster: what the other agents do with its routes, three ways.
//!
//! The three nodes of `node_e2e` (n1 and n2 on one subnet, n3 behind a router, VXLAN
//! CrossSubnet), but with the full mesh replaced by a `BGPPeer` that peers every node
//! with every other with `keepAliveTime: 3s`: the hold time is 9 s, so a silent node is
//! noticed in seconds rather than the default 90 s.
//!
//! - a block claimed on n1 (`serval ipam assign --node n1` into a fresh block) becomes
//!   a route on n2 (direct) and n3 (VXLAN), and a blackhole on n1;
//! - n3's agent is killed with SIGKILL: its sessions close without a NOTIFICATION;
//! - n3's link goes down: nothing closes, n1 and n2 notice only when the hold timer
//!   expires;
//! - n3 is removed gracefully: its agent gets SIGTERM (it closes its sessions for a
//!   graceful restart, keeps its kernel routes, removes its ready file), then its
//!   ServalNode is deleted: n1 and n2 drop the peer and its routes at once.
//!
//! Graceful restart (RFC 4724 with RFC 8538's N bit) is on between serval nodes. When
//! n3's agent dies its kernel closes the connections: that is a restart, and n1 and n2
//! keep n3's routes, marked stale, for the restart time n3 advertised (the BGPPeer's
//! `maxRestartTime: 20s` here, 120 s by default). When n3 goes silent, the hold timer
//! ends the sessions and, between serval nodes, that is not a restart: n3's routes go
//! within the hold time. Each case prints how long the routes took to go.

use std::time::{Duration, Instant};

mod node_support;

use node_support::{
    apply, bgp_peers, has_problem, route_of, serval, store_with_pool, three_nodes, wait_route, Node,
};
use serval_integration::{scenario, tools, wait_for, Bridge, Error, Netns, Result, TestDir};

/// `keepAliveTime` of the BGPPeer; the hold time is three times it.
const KEEPALIVE: u64 = 3;
const HOLD: Duration = Duration::from_secs(3 * KEEPALIVE);
/// The graceful-restart time of the BGPPeer: how long a killed agent's routes stay.
const RESTART: Duration = Duration::from_secs(20);
/// Polling, a loaded machine, the agent's route programming.
const MARGIN: Duration = Duration::from_secs(5);

const PEERING: &str = "\
apiVersion: serval.dev/v1
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false}
---
apiVersion: serval.dev/v1
kind: BGPPeer
metadata: {name: all-nodes}
spec:
  peerSelector: all()
  keepAliveTime: 3s
  maxRestartTime: 20s
";

/// The three nodes with their agents, every pair Established with a 9 s hold time,
/// and one block claimed on each node and routed everywhere.
struct Bed {
    store: String,
    nodes: [Node; 3],
    /// Each node's block, in the order of `nodes`.
    blocks: [String; 3],
    _router: Netns,
    _segment: Bridge,
}

fn bed(test: &TestDir) -> Result<Bed> {
    tools::require_all(&["ip", "curl"])?;
    let store = store_with_pool(test, &[])?;
    apply(&store, test, "peering.yaml", PEERING)?;
    let (nodes, router, segment) = three_nodes(test)?;
    let [mut n1, mut n2, mut n3] = nodes;
    for n in [&mut n1, &mut n2, &mut n3] {
        n.start(&store)?;
    }
    let nodes = [n1, n2, n3];
    for n in &nodes {
        let peers = wait_for(
            Duration::from_secs(40),
            &format!(
                "{}: two node peers Established with a 9 s hold time",
                n.name
            ),
            || bgp_peers(n),
            |peers| {
                peers.len() == 2
                    && peers
                        .iter()
                        .all(|p| p["state"] == "Established" && p["hold-time"] == HOLD.as_secs())
            },
        )?;
        assert_eq!(peers.len(), 2);
    }
    let mut blocks = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        // One address in a block of its own per node: 10.65.(10+i).1.
        let ip = format!("10.65.{}.1", 10 + i);
        serval(
            &store,
            &[
                "ipam",
                "assign",
                "--node",
                &n.name,
                "--handle",
                &format!("pod-{}", n.name),
                "--ip",
                &ip,
            ],
        )?;
        blocks.push(format!("10.65.{}.0/26", 10 + i));
    }
    let t0 = Instant::now();
    for n in &nodes {
        for b in &blocks {
            wait_route(n, b, true, t0, Duration::from_secs(30))?;
        }
    }
    let blocks: [String; 3] = blocks
        .try_into()
        .map_err(|_| Error::InvalidSpec("three blocks".into()))?;
    Ok(Bed {
        store,
        nodes,
        blocks,
        _router: router,
        _segment: segment,
    })
}

/// Waits until n1's and n2's sessions to n3 are down (`how`: what brought them down).
fn session_to_n3_down(bed: &Bed, within: Duration, how: &str) -> Result<()> {
    for n in &bed.nodes[..2] {
        wait_for(
            within,
            &format!("{}: session to n3 down {how}", n.name),
            || bgp_peers(n),
            |p| {
                p.iter()
                    .any(|p| p["address"] == "198.18.1.13" && p["state"] != "Established")
            },
        )?;
    }
    Ok(())
}

/// Waits until neither n1 nor n2 routes n3's block; returns the time from `t0` on each.
fn withdrawn_on_n1_and_n2(bed: &Bed, t0: Instant, within: Duration) -> Result<[Duration; 2]> {
    let b3 = &bed.blocks[2];
    Ok([
        wait_route(&bed.nodes[0], b3, false, t0, within)?,
        wait_route(&bed.nodes[1], b3, false, t0, within)?,
    ])
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// (a) A block claimed on n1 is routed on n2 and n3; (c) n3 removed gracefully: SIGTERM,
/// then its ServalNode deleted.
#[test]
fn block_routed_everywhere_and_graceful_removal() {
    scenario("node-leave-graceful", |test| {
        let mut bed = bed(test)?;
        // (a) A fresh block on n1, claimed from the CLI after the mesh is up.
        let t0 = Instant::now();
        serval(
            &bed.store,
            &[
                "ipam",
                "assign",
                "--node",
                "n1",
                "--handle",
                "fresh",
                "--ip",
                "10.65.77.1",
            ],
        )?;
        let fresh = "10.65.77.0/26";
        let within = Duration::from_secs(10);
        let [n1, n2, n3] = &bed.nodes;
        let on_n2 = wait_route(n2, fresh, true, t0, within)?;
        let on_n3 = wait_route(n3, fresh, true, t0, within)?;
        assert_eq!(
            route_of(n1, fresh)?,
            Some((fresh.to_owned(), None, None)),
            "n1 holds its own block as a blackhole"
        );
        assert_eq!(
            route_of(n2, fresh)?,
            Some((
                fresh.to_owned(),
                Some("192.0.2.11".into()),
                Some("eth0".into())
            )),
            "n2 reaches n1's block directly on their subnet"
        );
        let via_n3 = route_of(n3, fresh)?;
        assert_eq!(
            via_n3.as_ref().and_then(|r| r.2.as_deref()),
            Some("vxlan.serval"),
            "n3 reaches n1's block through VXLAN: {via_n3:?}"
        );
        eprintln!(
            "block claimed on n1 (CLI) → route on n2 {}, on n3 {}",
            ms(on_n2),
            ms(on_n3)
        );

        // (c) SIGTERM: the agent closes its sessions without a NOTIFICATION (a graceful
        // restart), leaves its kernel routes and removes its ready file.
        let b3 = bed.blocks[2].clone();
        let n3_routes = bed.nodes[2].routes()?;
        let n3_dir = bed.nodes[2].dir.clone();
        let mut agent = bed.nodes[2]
            .agent
            .take()
            .ok_or_else(|| Error::InvalidSpec("n3 has no agent".into()))?;
        let status = agent.terminate(Duration::from_secs(10))?;
        assert!(
            status.is_some_and(|s| s.success()),
            "n3's agent exits 0 on SIGTERM: {status:?}"
        );
        assert!(!n3_dir.join("ready").exists(), "ready file removed on stop");
        assert_eq!(
            bed.nodes[2].routes()?,
            n3_routes,
            "n3 keeps its kernel routes"
        );
        session_to_n3_down(&bed, Duration::from_secs(10), "after SIGTERM")?;
        let [n1, n2, _] = &bed.nodes;
        for n in [n1, n2] {
            // The helper side of graceful restart: n3 may come back, its routes stay.
            assert!(
                route_of(n, &b3)?.is_some(),
                "{}: n3's block kept while n3 restarts",
                n.name
            );
        }

        // The node is gone for good: its ServalNode deleted.
        let t0 = Instant::now();
        let out = serval(&bed.store, &["delete", "servalnode", "n3"])?;
        // Like `calicoctl delete node`: the node's addresses and affinities go with it.
        assert!(out.contains("pod-n3"), "n3's pod address released: {out}");
        assert!(
            out.contains("vxlan-tunnel-addr-n3") && out.contains("2 empty block(s) deleted"),
            "n3's pod block and its tunnel address's block, empty once their addresses \
             are released, deleted: {out}"
        );
        let [on_n1, on_n2] = withdrawn_on_n1_and_n2(&bed, t0, Duration::from_secs(5))?;
        for n in [n1, n2] {
            let peers = bgp_peers(n)?;
            assert!(
                !peers.iter().any(|p| p["address"] == "198.18.1.13"),
                "{}: peer n3 removed: {peers:?}",
                n.name
            );
            assert!(route_of(n, &bed.blocks[0])?.is_some() || n.name == "n1");
            assert!(route_of(n, &bed.blocks[1])?.is_some() || n.name == "n2");
        }
        eprintln!(
            "ServalNode n3 deleted → its block withdrawn on n1 {}, on n2 {}",
            ms(on_n1),
            ms(on_n2)
        );
        Ok(())
    });
}

/// (b) n3's agent killed with SIGKILL.
#[test]
fn killed_agent_routes_withdrawn() {
    scenario("node-leave-kill", |test| {
        let mut bed = bed(test)?;
        let mut agent = bed.nodes[2]
            .agent
            .take()
            .ok_or_else(|| Error::InvalidSpec("n3 has no agent".into()))?;
        let t0 = Instant::now();
        agent.kill();
        let [n1, n2, _] = &bed.nodes;
        // The kernel closes the dead agent's connections: the sessions go down at once
        // and, graceful restart being negotiated, n3's routes stay, marked stale.
        session_to_n3_down(&bed, HOLD + MARGIN, "after kill -9")?;
        let down = t0.elapsed();
        for n in [n1, n2] {
            assert!(
                route_of(n, &bed.blocks[2])?.is_some(),
                "{}: n3's block withdrawn before its restart time ran out",
                n.name
            );
        }
        let bound = RESTART + MARGIN;
        let [on_n1, on_n2] = withdrawn_on_n1_and_n2(&bed, t0, bound)?;
        for (n, took) in [(n1, on_n1), (n2, on_n2)] {
            assert!(
                took >= RESTART - Duration::from_secs(2),
                "{}: n3's block went after {took:?}, before the 20 s restart time",
                n.name
            );
        }
        eprintln!(
            "n3 agent killed -9 → sessions down on n1 and n2 {}, block withdrawn on n1 {}, \
             on n2 {} (hold {} s, restart time {} s)",
            ms(down),
            ms(on_n1),
            ms(on_n2),
            HOLD.as_secs(),
            RESTART.as_secs()
        );
        // Routes between the remaining nodes are untouched.
        assert!(route_of(n1, &bed.blocks[1])?.is_some());
        assert!(route_of(n2, &bed.blocks[0])?.is_some());

        Ok(())
    });
}

/// (b) n3's link down: no FIN, no NOTIFICATION; the hold timer finds it.
#[test]
fn link_down_routes_withdrawn() {
    scenario("node-leave-link", |test| {
        let bed = bed(test)?;
        let t0 = Instant::now();
        bed.nodes[2].ns.ip(&["link", "set", "eth0", "down"])?;
        let [n1, n2, _] = &bed.nodes;
        session_to_n3_down(&bed, HOLD + MARGIN, "by its hold timer")?;
        let expired = t0.elapsed();
        assert!(
            expired >= HOLD - Duration::from_secs(KEEPALIVE),
            "the session went down after {expired:?}, before a hold time could pass"
        );
        // A node that goes silent is gone, not restarting: no stale period.
        let [on_n1, on_n2] = withdrawn_on_n1_and_n2(&bed, t0, HOLD + MARGIN)?;
        eprintln!(
            "n3 link down → hold timer expired on n1 and n2 {}, block withdrawn on n1 {}, \
             on n2 {} (hold {} s)",
            ms(expired),
            ms(on_n1),
            ms(on_n2),
            HOLD.as_secs(),
        );
        assert!(route_of(n1, &bed.blocks[1])?.is_some());
        assert!(route_of(n2, &bed.blocks[0])?.is_some());
        // n3 is then deleted while its agent still runs (it still reaches the file
        // store): the agent does not write its ServalNode back, and says why.
        let out = serval(&bed.store, &["delete", "servalnode", "n3"])?;
        assert!(out.contains("ServalNode n3 deleted"), "{out}");
        let n3 = &bed.nodes[2];
        let status = wait_for(
            Duration::from_secs(15),
            "n3's agent to report that its ServalNode was deleted",
            || n3.status(),
            |s| has_problem(s, "was deleted"),
        )?;
        assert!(n3.agent.is_some(), "n3's agent still runs: {status}");
        let got = serval(&bed.store, &["get", "servalnode", "-o", "json"])?;
        let names: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&got)
            .map_err(|e| Error::InvalidSpec(format!("get servalnode: {e}: {got}")))?
            .iter()
            .filter_map(|d| d["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(names, ["n1", "n2"], "n3 stays deleted");
        Ok(())
    });
}
