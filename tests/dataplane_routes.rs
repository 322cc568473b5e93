//! The route programmer against a real kernel, in network namespaces the tests create.

mod dataplane_support;

use std::collections::BTreeSet;
use std::time::Duration;

use dataplane_support::{veth, NetNs};
use futures_util::StreamExt;
use ipnet::IpNet;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use serval::node::dataplane::{
    Conflict, Dataplane, DesiredRoutes, NextHop, RouteConfig, RouteDiff, RouteTarget,
    SERVAL_PROTOCOL,
};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn gw(s: &str) -> RouteTarget {
    RouteTarget::direct(s.parse().unwrap())
}

/// A namespace with a veth pair whose first end has 192.0.2.1/24 and 2001:db8::1/64, so
/// 192.0.2.2–.9 and 2001:db8::2–9 are usable gateways.
fn node(tag: &str) -> NetNs {
    let ns = NetNs::new(tag);
    veth(
        &ns,
        "eth0",
        &["192.0.2.1/24", "2001:db8::1/64"],
        &ns,
        "peer0",
        &[],
    );
    ns
}

/// serval's routes as `ip -j route show proto 83` reports them, both families:
/// (dst, json) sorted by dst.
fn serval_routes(ns: &NetNs, table: &str) -> Vec<(String, serde_json::Value)> {
    let proto = SERVAL_PROTOCOL.to_string();
    let mut out = Vec::new();
    for family in ["-4", "-6"] {
        let routes = ns.ip_json(&[family, "route", "show", "table", table, "proto", &proto]);
        for r in routes.as_array().unwrap() {
            out.push((r["dst"].as_str().unwrap().to_owned(), r.clone()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn dsts(routes: &[(String, serde_json::Value)]) -> Vec<&str> {
    routes.iter().map(|(d, _)| d.as_str()).collect()
}

fn route<'a>(routes: &'a [(String, serde_json::Value)], dst: &str) -> &'a serde_json::Value {
    &routes
        .iter()
        .find(|(d, _)| d == dst)
        .unwrap_or_else(|| panic!("no route {dst} in {routes:?}"))
        .1
}

#[test]
fn sync_adds_replaces_and_deletes_ipv4_and_ipv6() {
    let ns = node("sync");
    ns.run(|| async {
        let mut dp = Dataplane::connect(RouteConfig::default()).unwrap();
        let mut desired = DesiredRoutes::default();
        desired
            .routes
            .insert(net("10.10.0.0/26"), RouteTarget::Blackhole);
        desired.routes.insert(net("10.10.1.0/26"), gw("192.0.2.2"));
        desired.routes.insert(net("10.10.2.0/26"), gw("192.0.2.3"));
        desired
            .routes
            .insert(net("fd10::/122"), RouteTarget::Blackhole);
        desired
            .routes
            .insert(net("fd10::40/122"), gw("2001:db8::2"));
        let report = dp.sync(&desired).await.unwrap();
        assert!(report.routes.is_clean(), "{report:?}");
        assert_eq!(report.routes.added.len(), 5);

        let routes = serval_routes(&ns, "main");
        assert_eq!(
            dsts(&routes),
            [
                "10.10.0.0/26",
                "10.10.1.0/26",
                "10.10.2.0/26",
                "fd10::/122",
                "fd10::40/122"
            ]
        );
        assert_eq!(route(&routes, "10.10.0.0/26")["type"], "blackhole");
        assert_eq!(route(&routes, "10.10.1.0/26")["gateway"], "192.0.2.2");
        assert_eq!(route(&routes, "10.10.1.0/26")["dev"], "eth0");
        assert_eq!(route(&routes, "fd10::/122")["type"], "blackhole");
        assert_eq!(route(&routes, "fd10::40/122")["gateway"], "2001:db8::2");

        // Change one gateway, drop one IPv4 and one IPv6 route, add one.
        desired.routes.insert(net("10.10.1.0/26"), gw("192.0.2.4"));
        desired.routes.remove(&net("10.10.2.0/26"));
        desired.routes.remove(&net("fd10::/122"));
        desired
            .routes
            .insert(net("10.10.3.0/26"), RouteTarget::Blackhole);
        let report = dp.sync(&desired).await.unwrap();
        assert_eq!(report.routes.replaced, vec![net("10.10.1.0/26")]);
        assert_eq!(
            report.routes.deleted,
            vec![net("10.10.2.0/26"), net("fd10::/122")]
        );
        assert_eq!(report.routes.added, vec![net("10.10.3.0/26")]);
        assert_eq!(report.routes.unchanged, 2);

        let routes = serval_routes(&ns, "main");
        assert_eq!(
            dsts(&routes),
            [
                "10.10.0.0/26",
                "10.10.1.0/26",
                "10.10.3.0/26",
                "fd10::40/122"
            ]
        );
        assert_eq!(route(&routes, "10.10.1.0/26")["gateway"], "192.0.2.4");

        // Nothing desired: all of serval's routes go.
        let report = dp.sync(&DesiredRoutes::default()).await.unwrap();
        assert_eq!(report.routes.deleted.len(), 4);
        assert!(serval_routes(&ns, "main").is_empty());
    });
}

#[test]
fn other_protocols_are_never_touched_and_conflicts_are_reported() {
    let ns = node("others");
    // A static route at a prefix serval will want, and one serval never mentions.
    ns.ip(&[
        "route",
        "add",
        "10.20.1.0/26",
        "via",
        "192.0.2.9",
        "proto",
        "static",
    ]);
    ns.ip(&[
        "route",
        "add",
        "10.20.9.0/26",
        "via",
        "192.0.2.9",
        "proto",
        "bird",
    ]);
    ns.ip(&[
        "route",
        "add",
        "fd20::/122",
        "via",
        "2001:db8::9",
        "proto",
        "static",
    ]);
    ns.run(|| async {
        let mut dp = Dataplane::connect(RouteConfig::default()).unwrap();
        let mut desired = DesiredRoutes::default();
        desired.routes.insert(net("10.20.0.0/26"), gw("192.0.2.2"));
        desired.routes.insert(net("10.20.1.0/26"), gw("192.0.2.2"));
        desired.routes.insert(net("fd20::/122"), gw("2001:db8::2"));
        let report = dp.sync(&desired).await.unwrap();
        assert_eq!(report.routes.added, vec![net("10.20.0.0/26")]);
        assert_eq!(
            report.routes.conflicts,
            vec![
                Conflict {
                    prefix: net("10.20.1.0/26"),
                    protocol: 4
                },
                Conflict {
                    prefix: net("fd20::/122"),
                    protocol: 4
                },
            ]
        );

        // An incremental upsert onto the static route is refused too.
        let diff = RouteDiff {
            upsert: [(net("10.20.1.0/26"), gw("192.0.2.3"))].into(),
            withdraw: [net("10.20.9.0/26")].into(),
        };
        let report = dp.apply_changes(&diff).await.unwrap();
        assert_eq!(
            report.routes.conflicts,
            vec![Conflict {
                prefix: net("10.20.1.0/26"),
                protocol: 4
            }]
        );
        assert!(report.routes.deleted.is_empty(), "{report:?}");

        dp.sync(&DesiredRoutes::default()).await.unwrap();
    });
    // Every foreign route is as it was.
    let all = ns.ip_json(&["-4", "route", "show"]);
    let find = |dst: &str| {
        all.as_array()
            .unwrap()
            .iter()
            .find(|r| r["dst"] == dst)
            .cloned()
    };
    let static_route = find("10.20.1.0/26").expect("static route still there");
    assert_eq!(static_route["gateway"], "192.0.2.9");
    assert_eq!(static_route["protocol"], "static");
    assert_eq!(
        find("10.20.9.0/26").expect("bird route still there")["protocol"],
        "bird"
    );
    let v6 = ns.ip_json(&["-6", "route", "show", "fd20::/122"]);
    assert_eq!(v6[0]["gateway"], "2001:db8::9");
    assert!(serval_routes(&ns, "main").is_empty());
}

/// Restart semantics: a new Dataplane (no memory) syncing a smaller desired state
/// deletes only what is gone and leaves the rest in place — checked with a route
/// monitor that must see no event for the kept routes before a sentinel route.
#[test]
fn restart_keeps_unchanged_routes_in_place() {
    let ns = node("restart");
    ns.run(|| async {
        let mut desired = DesiredRoutes::default();
        desired
            .routes
            .insert(net("10.30.0.0/26"), RouteTarget::Blackhole);
        desired.routes.insert(net("10.30.1.0/26"), gw("192.0.2.2"));
        desired.routes.insert(net("10.30.2.0/26"), gw("192.0.2.3"));
        desired.routes.insert(net("fd30::/122"), gw("2001:db8::2"));
        {
            let mut first = Dataplane::connect(RouteConfig::default()).unwrap();
            assert_eq!(first.sync(&desired).await.unwrap().routes.added.len(), 4);
        }

        let (conn, _handle, mut events) = rtnetlink::new_multicast_connection(&[
            rtnetlink::MulticastGroup::Ipv4Route,
            rtnetlink::MulticastGroup::Ipv6Route,
        ])
        .unwrap();
        tokio::spawn(conn);

        desired.routes.remove(&net("10.30.2.0/26"));
        desired
            .routes
            .insert(net("10.30.3.0/26"), RouteTarget::Blackhole);
        let mut second = Dataplane::connect(RouteConfig::default()).unwrap();
        let report = second.sync(&desired).await.unwrap();
        assert_eq!(report.routes.unchanged, 3);
        assert_eq!(report.routes.deleted, vec![net("10.30.2.0/26")]);
        assert_eq!(report.routes.added, vec![net("10.30.3.0/26")]);

        let sentinel = std::process::Command::new("ip")
            .args([
                "route",
                "add",
                "10.39.0.0/24",
                "via",
                "192.0.2.9",
                "proto",
                "static",
            ])
            .status()
            .unwrap();
        assert!(sentinel.success());
        let mut seen = BTreeSet::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some((message, _)) = events.next().await {
                let NetlinkPayload::InnerMessage(inner) = message.payload else {
                    continue;
                };
                let (kind, route) = match inner {
                    RouteNetlinkMessage::NewRoute(r) => ("new", r),
                    RouteNetlinkMessage::DelRoute(r) => ("del", r),
                    _ => continue,
                };
                let dst = route.attributes.iter().find_map(|a| match a {
                    netlink_packet_route::route::RouteAttribute::Destination(d) => {
                        Some(format!("{d:?}"))
                    }
                    _ => None,
                });
                let dst = format!(
                    "{kind} {}/{}",
                    dst.unwrap_or_default(),
                    route.header.destination_prefix_length
                );
                if dst.contains("10.39.0.0") {
                    break;
                }
                seen.insert(dst);
            }
        })
        .await
        .expect("the sentinel route's event");
        assert_eq!(
            seen,
            [
                "del Inet(10.30.2.0)/26".to_owned(),
                "new Inet(10.30.3.0)/26".to_owned()
            ]
            .into(),
            "kept routes must not be rewritten"
        );
    });
}

#[test]
fn blackholes_and_ecmp_multipath_ipv4_and_ipv6() {
    let ns = node("ecmp");
    ns.run(|| async {
        let mut dp = Dataplane::connect(RouteConfig::default()).unwrap();
        let hop = |s: &str| NextHop::Direct {
            gateway: s.parse().unwrap(),
            dev: Some("eth0".into()),
        };
        let mut desired = DesiredRoutes::default();
        desired
            .routes
            .insert(net("10.40.0.0/26"), RouteTarget::Blackhole);
        desired.routes.insert(
            net("10.40.1.0/26"),
            RouteTarget::Multipath([hop("192.0.2.2"), hop("192.0.2.3")].into()),
        );
        desired.routes.insert(
            net("fd40::/122"),
            RouteTarget::Multipath([hop("2001:db8::2"), hop("2001:db8::3")].into()),
        );
        let report = dp.sync(&desired).await.unwrap();
        assert!(report.routes.is_clean(), "{report:?}");

        let routes = serval_routes(&ns, "main");
        let gateways = |dst: &str| -> BTreeSet<String> {
            route(&routes, dst)["nexthops"]
                .as_array()
                .unwrap_or_else(|| panic!("{dst} is not multipath: {routes:?}"))
                .iter()
                .map(|nh| nh["gateway"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            gateways("10.40.1.0/26"),
            ["192.0.2.2".to_owned(), "192.0.2.3".to_owned()].into()
        );
        assert_eq!(
            gateways("fd40::/122"),
            ["2001:db8::2".to_owned(), "2001:db8::3".to_owned()].into()
        );
        assert_eq!(route(&routes, "10.40.0.0/26")["type"], "blackhole");

        // The same state again changes nothing (multipath compares as a set).
        let again = dp.sync(&desired).await.unwrap();
        assert_eq!(again.routes.unchanged, 3, "{again:?}");
        assert!(again.routes.added.is_empty() && again.routes.replaced.is_empty());

        // One path less: replaced by a single-path route.
        desired
            .routes
            .insert(net("10.40.1.0/26"), RouteTarget::Unicast(hop("192.0.2.3")));
        let report = dp.sync(&desired).await.unwrap();
        assert_eq!(report.routes.replaced, vec![net("10.40.1.0/26")]);
        let routes = serval_routes(&ns, "main");
        assert_eq!(route(&routes, "10.40.1.0/26")["gateway"], "192.0.2.3");
    });
}

#[test]
fn apply_changes_adds_replaces_and_withdraws() {
    let ns = node("incr");
    ns.run(|| async {
        let mut dp = Dataplane::connect(RouteConfig::default()).unwrap();
        let diff = RouteDiff {
            upsert: [
                (net("10.50.0.0/26"), gw("192.0.2.2")),
                (net("fd50::/122"), gw("2001:db8::2")),
            ]
            .into(),
            withdraw: BTreeSet::new(),
        };
        let report = dp.apply_changes(&diff).await.unwrap();
        assert_eq!(report.routes.added.len(), 2, "{report:?}");

        let diff = RouteDiff {
            upsert: [(net("10.50.0.0/26"), gw("192.0.2.5"))].into(),
            withdraw: [net("fd50::/122")].into(),
        };
        let report = dp.apply_changes(&diff).await.unwrap();
        assert_eq!(report.routes.replaced, vec![net("10.50.0.0/26")]);
        assert_eq!(report.routes.deleted, vec![net("fd50::/122")]);
        let routes = serval_routes(&ns, "main");
        assert_eq!(dsts(&routes), ["10.50.0.0/26"]);
        assert_eq!(route(&routes, "10.50.0.0/26")["gateway"], "192.0.2.5");
    });
}

#[test]
fn refused_route_is_reported_with_its_prefix_and_the_rest_goes_in() {
    let ns = node("refused");
    ns.run(|| async {
        let mut dp = Dataplane::connect(RouteConfig::default()).unwrap();
        let mut desired = DesiredRoutes::default();
        // 198.51.100.1 is on no connected subnet: the kernel refuses the route.
        desired
            .routes
            .insert(net("10.60.0.0/26"), gw("198.51.100.1"));
        desired.routes.insert(net("10.60.1.0/26"), gw("192.0.2.2"));
        let report = dp.sync(&desired).await.unwrap();
        assert_eq!(report.routes.added, vec![net("10.60.1.0/26")]);
        assert_eq!(report.routes.failures.len(), 1);
        let message = report.routes.failures[0].error.to_string();
        assert!(
            message.contains("adding route 10.60.0.0/26 via 198.51.100.1"),
            "{message}"
        );
    });
}

#[test]
fn custom_table_above_255() {
    let ns = node("table");
    ns.run(|| async {
        let config = RouteConfig {
            table: 1000,
            ..RouteConfig::default()
        };
        let mut dp = Dataplane::connect(config).unwrap();
        let mut desired = DesiredRoutes::default();
        desired.routes.insert(net("10.70.0.0/26"), gw("192.0.2.2"));
        assert_eq!(dp.sync(&desired).await.unwrap().routes.added.len(), 1);
        assert_eq!(dp.sync(&desired).await.unwrap().routes.unchanged, 1);
    });
    let in_1000 = ns.ip_json(&[
        "-4",
        "route",
        "show",
        "table",
        "1000",
        "proto",
        &SERVAL_PROTOCOL.to_string(),
    ]);
    assert_eq!(in_1000.as_array().unwrap().len(), 1, "{in_1000}");
    assert_eq!(in_1000[0]["dst"], "10.70.0.0/26");
    assert!(serval_routes(&ns, "main").is_empty());
}

/// Thousands of requests, some of them large ECMP routes, go out in many datagrams; every
/// outcome is matched to its route.
#[test]
fn many_routes_and_large_ecmp_requests_span_several_datagrams() {
    let ns = node("many");
    ns.run(|| async {
        let mut dp = Dataplane::connect(RouteConfig::default()).unwrap();
        let mut desired = DesiredRoutes::default();
        for i in 0..3000u32 {
            let addr =
                std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 80, 0, 0)) + i);
            desired
                .routes
                .insert(IpNet::from(std::net::IpAddr::V4(addr)), gw("192.0.2.2"));
        }
        let hops: BTreeSet<NextHop> = (2..10)
            .map(|h| NextHop::Direct {
                gateway: format!("192.0.2.{h}").parse().unwrap(),
                dev: None,
            })
            .collect();
        for i in 0..300u32 {
            let addr =
                std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 90, 0, 0)) + i * 64);
            desired.routes.insert(
                IpNet::new(std::net::IpAddr::V4(addr), 26).unwrap(),
                RouteTarget::Multipath(hops.clone()),
            );
        }
        // One route the kernel refuses, in the middle of it all.
        desired
            .routes
            .insert(net("10.85.0.0/26"), gw("198.51.100.1"));
        let report = dp.sync(&desired).await.unwrap();
        assert_eq!(report.routes.added.len(), 3300);
        assert_eq!(report.routes.failures.len(), 1);
        assert_eq!(report.routes.failures[0].prefix, net("10.85.0.0/26"));
        assert!(!report.routes.added.contains(&net("10.85.0.0/26")));

        let again = dp.sync(&desired).await.unwrap();
        assert_eq!(again.routes.unchanged, 3300);
        assert!(again.routes.added.is_empty() && again.routes.replaced.is_empty());
        assert_eq!(again.routes.failures.len(), 1);
    });
    let routes = serval_routes(&ns, "main");
    assert_eq!(routes.len(), 3300);
    assert_eq!(
        route(&routes, "10.90.0.0/26")["nexthops"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
}
