//! A node is not a transit router: one serval node (agent on the embedded file store)
//! between two routers of different ASes (real BIRDs) on one segment.
//!
//! ```text
//!   bird A (AS 65001) .1 ──┐
//!                          br ── n1 .11 (AS 64512, pool 10.65.0.0/16)
//!   bird B (AS 65002) .2 ──┘        192.0.2.0/24
//! ```
//!
//! A announces a network of its own, a prefix inside the pool and one inside the
//! segment; B a network of its own and a default route. Each BIRD must learn the node's
//! pod block and nothing the other sent; the node programs the routers' networks and the
//! default route through them, never the prefix inside its own subnet.

use std::net::IpAddr;
use std::time::Duration;

mod node_support;

use ipnet::IpNet;
use node_support::{apply, block_of, route_of, store_with_pool, Node};
use serval_integration::{
    scenario, tools, wait_for, Announcement, Asn, BgpDaemon, Bird, Bridge, Error, NeighborSpec,
    Netns, Result, Route, RouterSpec,
};

const NODE: &str = "192.0.2.11";
const BIRD_A: &str = "192.0.2.1";
const BIRD_B: &str = "192.0.2.2";
const NODE_AS: u32 = 64512;

/// A's own network, a prefix inside the pool, and one inside the segment.
const A_NET: &str = "203.0.113.0/24";
const A_POOL: &str = "10.65.192.0/26";
const A_SEGMENT: &str = "192.0.2.128/25";
/// B's own network and its default route.
const B_NET: &str = "198.51.100.0/24";
const B_DEFAULT: &str = "0.0.0.0/0";

fn ip(s: &str) -> Result<IpAddr> {
    s.parse()
        .map_err(|_| Error::InvalidSpec(format!("address {s}")))
}

fn net(s: &str) -> Result<IpNet> {
    s.parse()
        .map_err(|_| Error::InvalidSpec(format!("prefix {s}")))
}

fn bird(
    ns: &Netns,
    test: &serval_integration::TestDir,
    asn: u32,
    me: &str,
    nets: &[&str],
) -> Result<Bird> {
    let router_id = me
        .parse()
        .map_err(|_| Error::InvalidSpec(format!("router id {me}")))?;
    let mut spec = RouterSpec::new(Asn(asn), router_id)
        .neighbor(NeighborSpec::new(ip(NODE)?, Asn(NODE_AS)).local(ip(me)?));
    for n in nets {
        spec = spec.announce(Announcement::new(net(n)?));
    }
    Bird::start(ns, test, spec)
}

fn has(routes: &[Route], prefix: &str) -> bool {
    routes.iter().any(|r| r.prefix.to_string() == prefix)
}

#[test]
fn a_node_does_not_carry_routes_between_its_external_peers() {
    scenario("hostile-transit", |test| {
        tools::require_all(&["ip", "bird", "birdc"])?;
        tools::require_root()?;
        let store = store_with_pool(test, &[])?;
        let mut n1 = Node::new("n1", test)?;
        let ns_a = Netns::new()?;
        let ns_b = Netns::new()?;
        let mut segment = Bridge::new()?;
        for (ns, addr) in [(&n1.ns, NODE), (&ns_a, BIRD_A), (&ns_b, BIRD_B)] {
            segment.connect(ns, "eth0")?;
            ns.add_addr("eth0", net(&format!("{addr}/24"))?)?;
        }
        apply(
            &store,
            test,
            "peers.yaml",
            &format!(
                "apiVersion: serval.dev/v1\nkind: BGPPeer\nmetadata: {{name: router-a}}\n\
                 spec: {{peerIP: {BIRD_A}, asNumber: 65001}}\n---\n\
                 apiVersion: serval.dev/v1\nkind: BGPPeer\nmetadata: {{name: router-b}}\n\
                 spec: {{peerIP: {BIRD_B}, asNumber: 65002}}\n"
            ),
        )?;
        let bird_a = bird(&ns_a, test, 65001, BIRD_A, &[A_NET, A_POOL, A_SEGMENT])?;
        let bird_b = bird(&ns_b, test, 65002, BIRD_B, &[B_NET, B_DEFAULT])?;
        n1.start(&store)?;
        let pod = n1.add_pod(&store)?;
        let block = block_of(pod);

        // Each router learns the node's pod block.
        for (name, b) in [("A", &bird_a), ("B", &bird_b)] {
            b.wait_established(ip(NODE)?, Duration::from_secs(30))
                .map_err(|e| Error::Check(format!("bird {name}: {e}\n{}", b.log())))?;
            b.wait_route(ip(NODE)?, net(&block)?, Duration::from_secs(30))?;
        }

        // The node learned what the routers sent: their networks and B's default route
        // are in its kernel through them; the prefix inside its own segment is not.
        for (prefix, gw) in [(A_NET, BIRD_A), (B_NET, BIRD_B), (B_DEFAULT, BIRD_B)] {
            let shown = if prefix == B_DEFAULT {
                "default"
            } else {
                prefix
            };
            let got = wait_for(
                Duration::from_secs(20),
                &format!("n1: kernel route for {prefix} via {gw}"),
                || route_of(&n1, shown),
                |r| {
                    r.as_ref().is_some_and(|(_, g, dev)| {
                        g.as_deref() == Some(gw) && dev.as_deref() == Some("eth0")
                    })
                },
            )?;
            eprintln!("n1: {prefix} -> {got:?}");
        }
        // The pool prefix A sent is routed as pool routes are (towards A, as a route
        // reflector in front of the nodes would send it).
        wait_for(
            Duration::from_secs(20),
            &format!("n1: kernel route for {A_POOL}"),
            || route_of(&n1, A_POOL),
            |r| {
                r.as_ref()
                    .is_some_and(|(_, g, _)| g.as_deref() == Some(BIRD_A))
            },
        )?;
        assert_eq!(
            route_of(&n1, A_SEGMENT)?,
            None,
            "a route inside the node's own subnet was programmed"
        );

        // Neither router hears of the other through the node: the node has everything
        // it would pass on, so a route it exports would reach the other side within
        // milliseconds; watch for three seconds.
        serval_integration::holds_for(
            Duration::from_secs(3),
            "bird B to have no route of A's and bird A none of B's",
            || Ok((bird_a.rib()?, bird_b.rib()?)),
            |(rib_a, rib_b)| {
                !has(rib_b, A_NET)
                    && !has(rib_b, A_POOL)
                    && !has(rib_b, A_SEGMENT)
                    && !has(rib_a, B_NET)
                    && !has(rib_a, B_DEFAULT)
            },
        )?;
        // And they still have the node's block: the pools flow.
        for (name, b) in [("A", &bird_a), ("B", &bird_b)] {
            let rib = b.rib()?;
            assert!(has(&rib, &block), "bird {name} lost {block}: {rib:?}");
        }
        Ok(())
    });
}
