//! The node agent end to end: three nodes in namespaces, two on one subnet and one
//! behind a router, one embedded file store, one `serval node run` per node.
//!
//! ```text
//!   p1        p2                               p3          (pod namespaces)
//!   │cali-pod │cali-pod                        │cali-pod
//!   n1 ───┬── n2          r ─────────────────── n3
//!  .11    │  .12          │.1  198.18.1.0/24   .13
//!         br ─────────────┘
//!        192.0.2.0/24
//! ```
//!
//! The pool uses `vxlanMode: CrossSubnet`: n1 ↔ n2 are routed directly (no tunnel
//! device), n3 through `vxlan.serval`. Pods get their addresses from `serval ipam
//! assign --node` after the agents run, so each block is claimed, announced and routed
//! while the mesh is up; the test then pings pod to pod, reads `serval node status`,
//! restarts one agent with SIGTERM and checks that no ping is lost and its routes stay.

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

mod node_support;

use node_support::{
    block_of, http, ping, run, serval, serval_bin, store_with_pool, three_nodes, Node, POOL,
};
use serval_integration::{scenario, tools, wait_for, wait_until, Bridge, Error, Netns, Poll};

#[test]
fn three_agents_mesh_route_and_ping() {
    scenario("node-e2e", |test| {
        tools::require_all(&["ip", "ping", "nft", "curl"])?;
        let store = store_with_pool(test, &["--nat-outgoing"])?;

        let (nodes, _router, _segment) = three_nodes(test)?;
        let [mut n1, mut n2, mut n3] = nodes;

        for n in [&mut n1, &mut n2, &mut n3] {
            n.start(&store)?;
        }
        let nodes = [&n1, &n2, &n3];
        // The mesh: each agent has the two others Established, as mesh peers.
        for n in nodes {
            wait_for(
                Duration::from_secs(30),
                &format!("{}: mesh established", n.name),
                || n.status(),
                |s| {
                    let peers = s["peers"].as_array().cloned().unwrap_or_default();
                    peers.len() == 2
                        && peers
                            .iter()
                            .all(|p| p["state"] == "Established" && p["type"] == "mesh")
                        && s["ready"] == true
                },
            )?;
            let nodename = std::fs::read_to_string(n.dir.join("nodename"))
                .map_err(|e| Error::InvalidSpec(format!("nodename file: {e}")))?;
            assert_eq!(nodename, n.name);
            let mtu = std::fs::read_to_string(n.dir.join("mtu"))
                .map_err(|e| Error::InvalidSpec(format!("mtu file: {e}")))?;
            assert_eq!(mtu.trim(), "1450", "VXLAN pool over a 1500-byte underlay");
            assert!(n.dir.join("ready").exists(), "{}: ready file", n.name);
        }

        if let Some(a) = &n1.agent {
            let status =
                std::fs::read_to_string(format!("/proc/{}/status", a.pid())).unwrap_or_default();
            let rss = status
                .lines()
                .find(|l| l.starts_with("VmRSS"))
                .unwrap_or("VmRSS: ?");
            eprintln!("n1 agent idle with 2 mesh peers (debug build): {rss}");
        }

        // Pods: each claims a block on its node while the mesh runs.
        let mut claimed = Vec::new();
        for n in [&mut n1, &mut n2, &mut n3] {
            let t0 = Instant::now();
            let ip = n.add_pod(&store)?;
            claimed.push((n.name.clone(), block_of(ip), t0));
        }
        let nodes = [&n1, &n2, &n3];
        let underlay = [
            ("n1", "192.0.2.11"),
            ("n2", "192.0.2.12"),
            ("n3", "198.18.1.13"),
        ];
        for n in nodes {
            for (owner, block, _) in &claimed {
                let want_blackhole = *owner == n.name;
                let cross = (n.name == "n3") != (owner == "n3");
                let gw = underlay.iter().find(|(o, _)| o == owner).map(|(_, a)| *a);
                wait_until(
                    Duration::from_secs(20),
                    &format!("{}: route for {owner}'s block {block}", n.name),
                    || match n.routes() {
                        Err(e) => Poll::Pending(e.to_string()),
                        Ok(routes) => {
                            let found = routes.iter().find(|(dst, _, _)| dst == block);
                            let ok = match found {
                                None => false,
                                Some((_, gwy, dev)) if want_blackhole => {
                                    gwy.is_none() && dev.is_none()
                                }
                                // Across subnets: through the VXLAN device.
                                Some((_, _, dev)) if cross => {
                                    dev.as_deref() == Some("vxlan.serval")
                                }
                                // Same subnet: straight to the node, no tunnel device.
                                Some((_, gwy, dev)) => {
                                    gwy.as_deref() == gw && dev.as_deref() == Some("eth0")
                                }
                            };
                            if ok {
                                Poll::Ready(())
                            } else {
                                Poll::Pending(format!("{routes:?}"))
                            }
                        }
                    },
                )?;
            }
        }

        let ip = |n: &Node| n.pod_ip.ok_or_else(|| Error::InvalidSpec("no pod".into()));
        for (from, to) in [(&n1, &n2), (&n1, &n3), (&n3, &n2), (&n2, &n1)] {
            let out = ping(&from.pod, ip(to)?)?;
            assert!(
                out.contains(" 0% packet loss"),
                "{} → {}: {out}",
                from.name,
                to.name
            );
        }

        // What `serval node status` says about the routes and tunnels.
        let s = n1.status()?;
        let routes = s["routes"].as_array().cloned().unwrap_or_default();
        let kind_of = |block: &str| {
            routes.iter().find(|r| r["prefix"] == block).map(|r| {
                (
                    r["kind"].as_str().unwrap_or("").to_owned(),
                    r["device"].clone(),
                )
            })
        };
        assert_eq!(
            kind_of(&claimed[0].1).map(|k| k.0),
            Some("blackhole".into())
        );
        assert_eq!(kind_of(&claimed[1].1).map(|k| k.0), Some("direct".into()));
        assert_eq!(
            kind_of(&claimed[2].1),
            Some(("vxlan".into(), serde_json::json!("vxlan.serval")))
        );
        assert_eq!(s["tunnels"][0]["device"], "vxlan.serval");
        assert_eq!(s["nat_pools"], serde_json::json!([POOL]));
        for n in [&n1, &n2, &n3] {
            let table = n.ns.exec(&["nft", "list", "table", "ip", "serval"])?;
            assert!(
                table.contains(POOL) && table.contains("masquerade"),
                "{}: {table}",
                n.name
            );
        }
        assert!(s["tunnels"][0]["error"].is_null(), "{}", s["tunnels"]);
        let text = run(Command::new(serval_bin()).args([
            "node",
            "status",
            "--socket",
            &n1.socket().display().to_string(),
        ]))?;
        assert!(
            text.contains("Established") && text.contains("mesh"),
            "{text}"
        );
        // The embedded speaker answers `serval bgp status` on its own socket.
        let bgp = run(Command::new(serval_bin()).args([
            "bgp",
            "status",
            "--json",
            "--socket",
            &n1.dir.join("bgp.sock").display().to_string(),
        ]))?;
        assert!(
            bgp.contains("192.0.2.12") && bgp.contains("Established"),
            "{bgp}"
        );

        // Health, readiness and metrics on the default address inside the namespace.
        assert_eq!(http(&n1.ns, "/healthz")?, (200, "ok\n".to_owned()));
        assert_eq!(http(&n1.ns, "/readyz")?, (200, "ready\n".to_owned()));
        let (code, metrics) = http(&n1.ns, "/metrics")?;
        assert_eq!(code, 200);
        for want in [
            r#"serval_bgp_session_up{peer="192.0.2.12",peer_type="mesh"} 1"#,
            r#"serval_bgp_prefixes_received{peer="198.18.1.13",peer_type="mesh"} 1"#,
            r#"serval_routes_programmed{kind="direct"} 1"#,
            r#"serval_routes_programmed{kind="vxlan"} 1"#,
            r#"serval_routes_programmed{kind="blackhole"} 1"#,
            r#"serval_ipam_addresses_used{pool="pods"}"#,
            "serval_reconcile_duration_seconds_count",
            "serval_ready 1",
        ] {
            assert!(metrics.contains(want), "{want} missing from\n{metrics}");
        }

        // A block claimed on n3 is routed on n1: how long it takes.
        let t0 = Instant::now();
        let out = serval(
            &store,
            &[
                "ipam",
                "assign",
                "--node",
                "n3",
                "--handle",
                "extra",
                "--ip",
                "10.65.200.1",
            ],
        )?;
        let extra_block = block_of(
            out.trim()
                .parse()
                .map_err(|_| Error::InvalidSpec(out.clone()))?,
        );
        let assigned = t0.elapsed();
        let mut routed = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if n1.routes()?.iter().any(|(d, _, _)| *d == extra_block) {
                routed = Some(t0.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let routed = routed.ok_or_else(|| {
            Error::InvalidSpec(format!("n1 never routed {extra_block} claimed on n3"))
        })?;
        eprintln!(
            "block claimed on n3 → route on n1: {:.0} ms (of which {:.0} ms the CLI's own write)",
            routed.as_secs_f64() * 1000.0,
            assigned.as_secs_f64() * 1000.0
        );

        // SIGTERM and restart of n2's agent: its routes stay, pods keep talking.
        let before = n2.routes()?;
        let pinger = n1.pod.spawn(
            &[
                "ping",
                "-i",
                "0.05",
                "-c",
                "120",
                "-q",
                &ip(&n2)?.to_string(),
            ],
            Some(&test.path().join("restart-ping.log")),
        )?;
        if let Some(mut a) = n2.agent.take() {
            a.terminate(Duration::from_secs(10))?;
        }
        assert_eq!(n2.routes()?, before, "routes stay while the agent is down");
        assert!(!n2.dir.join("ready").exists(), "ready file removed on stop");
        n2.start(&store)?;
        wait_for(
            Duration::from_secs(30),
            "n2: back, mesh up and initial sync done",
            || n2.status(),
            |s| {
                s["bgp_initial_sync_done"] == true
                    && s["peers"]
                        .as_array()
                        .is_some_and(|p| p.iter().all(|p| p["state"] == "Established"))
            },
        )?;
        let mut pinger = pinger;
        wait_until(
            Duration::from_secs(20),
            "restart pinger done",
            || match pinger.try_wait() {
                Ok(Some(_)) => Poll::Ready(()),
                Ok(None) => Poll::Pending("running".into()),
                Err(e) => Poll::Pending(e.to_string()),
            },
        )?;
        let log = std::fs::read_to_string(test.path().join("restart-ping.log"))
            .map_err(|e| Error::InvalidSpec(format!("ping log: {e}")))?;
        assert!(
            log.contains(" 0% packet loss"),
            "pings lost across a restart: {log}"
        );
        let mut after = n2.routes()?;
        after.retain(|(d, _, _)| *d != extra_block);
        let mut before = before;
        before.retain(|(d, _, _)| *d != extra_block);
        assert_eq!(after, before, "same routes after the restart");
        let s = n2.status()?;
        let errors: Vec<&serde_json::Value> = s["routes"]
            .as_array()
            .map(|r| r.iter().filter(|r| !r["error"].is_null()).collect())
            .unwrap_or_default();
        assert!(
            errors.is_empty(),
            "routes refused after the restart: {errors:?}"
        );

        // kill -9, then start: a stale serval route goes, other protocols' stay.
        if let Some(mut a) = n3.agent.take() {
            a.kill();
        }
        n3.ns.ip(&[
            "route",
            "add",
            "10.65.250.0/26",
            "via",
            "198.18.1.1",
            "proto",
            "83",
        ])?;
        n3.ns.ip(&[
            "route",
            "add",
            "10.99.0.0/24",
            "via",
            "198.18.1.1",
            "proto",
            "static",
        ])?;
        n3.start(&store)?;
        wait_for(
            Duration::from_secs(40),
            "n3: back after kill -9 with its initial sync done",
            || n3.status(),
            |s| s["bgp_initial_sync_done"] == true,
        )?;
        let routes = n3.routes()?;
        assert!(
            !routes.iter().any(|(d, _, _)| d == "10.65.250.0/26"),
            "stale route left: {routes:?}"
        );
        for (_, block, _) in &claimed {
            assert!(
                routes.iter().any(|(d, _, _)| d == block),
                "{block} missing: {routes:?}"
            );
        }
        let other = n3.ns.ip(&["route", "show", "10.99.0.0/24"])?;
        assert!(
            other.contains("proto static"),
            "another protocol's route was touched: {other:?}"
        );
        let out = ping(&n3.pod, ip(&n1)?)?;
        assert!(
            out.contains(" 0% packet loss"),
            "n3 → n1 after kill -9: {out}"
        );

        // A pool asking for IP-in-IP: on a kernel without ipip the agent says so,
        // naming the pool, in status and readiness, and the other pool keeps working.
        let probe = Netns::new()?;
        let has_ipip = probe.ip(&["link", "add", "probe0", "type", "ipip"]).is_ok();
        serval(
            &store,
            &[
                "pool",
                "add",
                "10.66.0.0/16",
                "--name",
                "ipip-pool",
                "--ipip-mode",
                "always",
            ],
        )?;
        let s = wait_for(
            Duration::from_secs(20),
            "n1: the IP-in-IP tunnel tried",
            || n1.status(),
            |s| {
                s["tunnels"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t["device"] == "tunl0"))
            },
        )?;
        let tunl = s["tunnels"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["device"] == "tunl0").cloned())
            .unwrap_or_default();
        if has_ipip {
            assert!(tunl["error"].is_null(), "{tunl}");
        } else {
            let e = tunl["error"].as_str().unwrap_or_default();
            assert!(e.contains("ipip-pool") && e.contains("ipip"), "{tunl}");
            let (code, body) = http(&n1.ns, "/readyz")?;
            assert_eq!(code, 503, "{body}");
            assert!(body.contains("ipip-pool"), "{body}");
            eprintln!("kernel without ipip, as reported: {e}");
        }
        let out = ping(&n1.pod, ip(&n3)?)?;
        assert!(
            out.contains(" 0% packet loss"),
            "n1 → n3 with an unusable pool: {out}"
        );
        Ok(())
    });
}

/// IPv6 blocks: two nodes on one IPv6 subnet routed directly, a third behind a router
/// through `vxlan-v6.serval`, with the mesh over IPv6 sessions.
#[test]
fn ipv6_blocks_direct_and_vxlan() {
    scenario("node-e2e-v6", |test| {
        tools::require_all(&["ip", "ping"])?;
        let store = format!("file:{}", test.path().join("ipam.json").display());
        serval(
            &store,
            &[
                "pool",
                "add",
                "fd00:65::/112",
                "--name",
                "pods6",
                "--vxlan-mode",
                "cross-subnet",
            ],
        )?;
        let mut nodes = vec![
            Node::new("n1", test)?,
            Node::new("n2", test)?,
            Node::new("n3", test)?,
        ];
        let r = Netns::new()?;
        let mut br = Bridge::new()?;
        br.connect(&nodes[0].ns, "eth0")?;
        br.connect(&nodes[1].ns, "eth0")?;
        br.connect(&r, "eth0")?;
        r.veth("eth1", &nodes[2].ns, "eth0")?;
        let net = |s: &str| s.parse().map_err(|_| Error::InvalidSpec(s.into()));
        let addr = |s: &str| {
            s.parse::<IpAddr>()
                .map_err(|_| Error::InvalidSpec(s.into()))
        };
        nodes[0].ns.add_addr("eth0", net("2001:db8:a::11/64")?)?;
        nodes[1].ns.add_addr("eth0", net("2001:db8:a::12/64")?)?;
        r.add_addr("eth0", net("2001:db8:a::1/64")?)?;
        r.add_addr("eth1", net("2001:db8:b::1/64")?)?;
        nodes[2].ns.add_addr("eth0", net("2001:db8:b::13/64")?)?;
        // Forwarding nodes solicit neighbours from a link-local address, which the
        // test bed's veths do not get by themselves.
        r.add_addr("eth0", net("fe80::1/64")?)?;
        r.add_addr("eth1", net("fe80::1/64")?)?;
        for (i, n) in nodes.iter().enumerate() {
            n.ns.add_addr("eth0", net(&format!("fe80::{}/64", i + 11))?)?;
        }
        r.enable_forwarding()?;
        nodes[0].ns.add_default_route(addr("2001:db8:a::1")?)?;
        nodes[1].ns.add_default_route(addr("2001:db8:a::1")?)?;
        nodes[2].ns.add_default_route(addr("2001:db8:b::1")?)?;
        for (i, n) in nodes.iter_mut().enumerate() {
            n.extra = vec![
                "--ip".into(),
                "none".into(),
                "--ip6".into(),
                "autodetect".into(),
                "--router-id".into(),
                format!("10.255.0.{}", i + 1),
            ];
            n.start(&store)?;
        }
        let mut pods = Vec::new();
        for n in &nodes {
            wait_for(
                Duration::from_secs(30),
                &format!("{}: IPv6 mesh established", n.name),
                || n.status(),
                |s| {
                    s["peers"].as_array().is_some_and(|p| {
                        p.len() == 2 && p.iter().all(|p| p["state"] == "Established")
                    })
                },
            )?;
            let out = serval(
                &store,
                &[
                    "ipam",
                    "assign",
                    "--node",
                    &n.name,
                    "--handle",
                    &format!("pod6-{}", n.name),
                    "--num6",
                    "1",
                ],
            )?;
            let ip: std::net::Ipv6Addr = out
                .trim()
                .parse()
                .map_err(|_| Error::InvalidSpec(format!("ipam assign printed {out:?}")))?;
            n.ns.veth("cali-pod", &n.pod, "eth0")?;
            n.ns.add_addr("cali-pod", net("fe80::1/64")?)?;
            n.pod.add_addr("eth0", net(&format!("{ip}/128"))?)?;
            n.pod.ip(&[
                "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
            ])?;
            n.ns.ip(&[
                "-6",
                "route",
                "add",
                &format!("{ip}/128"),
                "dev",
                "cali-pod",
            ])?;
            pods.push(ip);
        }
        // Blocks of /122 in fd00:65::/112.
        let block = |ip: &std::net::Ipv6Addr| {
            let b = u128::from(*ip) & !0x3f;
            format!("{}/122", std::net::Ipv6Addr::from(b))
        };
        let devices = [
            ("n1", "n2", "eth0"),
            ("n2", "n1", "eth0"),
            ("n1", "n3", "vxlan-v6.serval"),
            ("n3", "n1", "vxlan-v6.serval"),
            ("n3", "n2", "vxlan-v6.serval"),
        ];
        for (at, owner, dev) in devices {
            let n = nodes
                .iter()
                .find(|n| n.name == at)
                .ok_or_else(|| Error::InvalidSpec(at.into()))?;
            let o = nodes.iter().position(|n| n.name == owner).unwrap_or(0);
            let want = block(&pods[o]);
            wait_until(
                Duration::from_secs(20),
                &format!("{at}: IPv6 route for {owner}'s {want} via {dev}"),
                || {
                    let text =
                        n.ns.ip(&["-6", "route", "show", "proto", "83"])
                            .unwrap_or_default();
                    if text
                        .lines()
                        .any(|l| l.starts_with(&want) && l.contains(&format!("dev {dev}")))
                    {
                        Poll::Ready(())
                    } else {
                        Poll::Pending(text)
                    }
                },
            )?;
        }
        for (from, to) in [(0, 1), (0, 2), (2, 1)] {
            let out = nodes[from].pod.exec(&[
                "ping",
                "-6",
                "-c",
                "3",
                "-i",
                "0.2",
                "-W",
                "2",
                &pods[to].to_string(),
            ])?;
            assert!(
                out.contains(" 0% packet loss"),
                "{} → {}: {out}",
                nodes[from].name,
                nodes[to].name
            );
        }
        let mtu = std::fs::read_to_string(nodes[0].dir.join("mtu"))
            .map_err(|e| Error::InvalidSpec(format!("mtu file: {e}")))?;
        assert_eq!(mtu.trim(), "1430", "VXLAN over IPv6: 70 bytes of headers");
        Ok(())
    });
}

/// Route reflection with the mesh off, configured with `serval apply`: n1 reflects
/// (cluster id, label), n2 and n3 peer only with it, and still route to each other's
/// blocks with the other node as next hop.
#[test]
fn route_reflector_with_the_mesh_off() {
    scenario("node-rr", |test| {
        tools::require_all(&["ip", "ping"])?;
        let store = store_with_pool(test, &[])?;
        let config = test.path().join("rr.yaml");
        std::fs::write(
            &config,
            "\
apiVersion: serval.dev/v1
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false}
---
apiVersion: serval.dev/v1
kind: ServalNode
metadata:
  name: n1
  labels: {route-reflector: 'true'}
spec:
  bgp: {routeReflectorClusterID: 224.0.0.1}
---
apiVersion: serval.dev/v1
kind: BGPPeer
metadata: {name: clients-to-reflectors}
spec:
  nodeSelector: all()
  peerSelector: route-reflector == 'true'
---
apiVersion: serval.dev/v1
kind: BGPPeer
metadata: {name: reflectors-to-clients}
spec:
  nodeSelector: route-reflector == 'true'
  peerSelector: '!has(route-reflector)'
",
        )
        .map_err(|e| Error::InvalidSpec(format!("writing rr.yaml: {e}")))?;
        serval(&store, &["apply", "-f", &config.display().to_string()])?;

        let (nodes, _router, _segment) = three_nodes(test)?;
        let [mut n1, mut n2, mut n3] = nodes;
        for n in [&mut n1, &mut n2, &mut n3] {
            n.start(&store)?;
        }
        let sessions = |n: &Node, want: &[(&str, &str)]| {
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(a, t)| (a.to_string(), t.to_string()))
                .collect();
            wait_for(
                Duration::from_secs(30),
                &format!("{}: sessions {want:?}", n.name),
                || n.status(),
                move |s| {
                    let peers = s["peers"].as_array().cloned().unwrap_or_default();
                    let mut got: Vec<(String, String)> = peers
                        .iter()
                        .filter(|p| p["state"] == "Established")
                        .map(|p| {
                            (
                                p["address"].as_str().unwrap_or("").to_owned(),
                                p["type"].as_str().unwrap_or("").to_owned(),
                            )
                        })
                        .collect();
                    got.sort();
                    peers.len() == want.len() && got == want
                },
            )
        };
        let s = sessions(
            &n1,
            &[("192.0.2.12", "rr-client"), ("198.18.1.13", "rr-client")],
        )?;
        assert_eq!(s["cluster_id"], "224.0.0.1");
        sessions(&n2, &[("192.0.2.11", "node-peer")])?;
        sessions(&n3, &[("192.0.2.11", "node-peer")])?;

        let mut blocks = Vec::new();
        for n in [&mut n1, &mut n2, &mut n3] {
            blocks.push(block_of(n.add_pod(&store)?));
        }
        // n2 reaches n3's block through VXLAN to n3 itself, learned from the reflector.
        for (n, block, dev) in [
            (&n2, &blocks[2], "vxlan.serval"),
            (&n3, &blocks[1], "vxlan.serval"),
            (&n2, &blocks[0], "eth0"),
        ] {
            wait_until(
                Duration::from_secs(20),
                &format!("{}: route for {block} via {dev}", n.name),
                || match n.routes() {
                    Ok(r)
                        if r.iter()
                            .any(|(d, _, v)| d == block && v.as_deref() == Some(dev)) =>
                    {
                        Poll::Ready(())
                    }
                    Ok(r) => Poll::Pending(format!("{r:?}")),
                    Err(e) => Poll::Pending(e.to_string()),
                },
            )?;
        }
        let to = |n: &Node| n.pod_ip.ok_or_else(|| Error::InvalidSpec("no pod".into()));
        for (from, dest) in [(&n2, &n3), (&n3, &n2), (&n2, &n1)] {
            let out = ping(&from.pod, to(dest)?)?;
            assert!(
                out.contains(" 0% packet loss"),
                "{} → {}: {out}",
                from.name,
                dest.name
            );
        }
        // The agent kept the operator's cluster id and label and added its own fields.
        let node = run(Command::new(serval_bin()).args([
            "get",
            "servalnode",
            "n1",
            "-o",
            "json",
            "--datastore",
            &store,
        ]))?;
        let node: serde_json::Value = serde_json::from_str(&node)
            .map_err(|e| Error::InvalidSpec(format!("get servalnode: {e}")))?;
        assert_eq!(node["metadata"]["labels"]["route-reflector"], "true");
        assert_eq!(node["spec"]["bgp"]["routeReflectorClusterID"], "224.0.0.1");
        assert_eq!(node["spec"]["bgp"]["ipv4Address"], "192.0.2.11/24");
        Ok(())
    });
}
