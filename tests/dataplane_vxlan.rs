//! VXLAN devices, FDB and neighbour entries, routes through them and real traffic
//! between two namespaces over a veth underlay; and the tunnel MTU.

mod dataplane_support;

use std::net::IpAddr;

use dataplane_support::{ping, require_tool, veth, NetNs};
use ipnet::IpNet;
use serval::node::dataplane::{
    Dataplane, DataplaneReport, DesiredRoutes, Encapsulation, Mac, RouteConfig, RouteTarget,
    VxlanPeer, VxlanTunnel, VXLAN_DEVICE, VXLAN_V6_DEVICE,
};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One node: its namespace, underlay address, VTEP address, pod block and one pod
/// address (on `lo`, standing in for a pod) inside the block.
struct Node {
    name: &'static str,
    ns: NetNs,
    underlay: &'static str,
    vtep: &'static str,
    block: &'static str,
    pod: &'static str,
}

impl Node {
    fn new(
        name: &'static str,
        underlay: &'static str,
        vtep: &'static str,
        block: &'static str,
        pod: &'static str,
    ) -> Node {
        let ns = NetNs::new(name);
        ns.sysctl("net.ipv4.conf.all.rp_filter", "0");
        ns.sysctl("net.ipv4.conf.default.rp_filter", "0");
        let prefix = if ip(pod).is_ipv6() { "128" } else { "32" };
        ns.ip(&["addr", "add", &format!("{pod}/{prefix}"), "dev", "lo"]);
        Node {
            name,
            ns,
            underlay,
            vtep,
            block,
            pod,
        }
    }

    fn ipv6(&self) -> bool {
        ip(self.underlay).is_ipv6()
    }

    fn device(&self) -> &'static str {
        if self.ipv6() {
            VXLAN_V6_DEVICE
        } else {
            VXLAN_DEVICE
        }
    }

    fn peer(&self) -> VxlanPeer {
        // Every node derives every other node's VTEP MAC from its name.
        VxlanPeer {
            vtep_addr: ip(self.vtep),
            vtep_mac: Mac::vtep(self.name, self.ipv6()),
            node_addr: ip(self.underlay),
        }
    }

    /// The node's own blackhole plus a VXLAN route to each of `remotes`' blocks.
    fn desired(&self, remotes: &[&Node]) -> DesiredRoutes {
        let mut desired = DesiredRoutes::default();
        desired
            .routes
            .insert(net(self.block), RouteTarget::Blackhole);
        for remote in remotes {
            desired
                .routes
                .insert(net(remote.block), RouteTarget::vxlan(remote.peer()));
        }
        desired
    }

    /// Runs the agent's part on this node: the device, then the routes and peers.
    fn program(&self, remotes: &[&Node]) -> DataplaneReport {
        let desired = self.desired(remotes);
        self.ns.run(|| async {
            let mut dp = Dataplane::connect(RouteConfig::default()).unwrap();
            let underlay = ip(self.underlay);
            let encap = if self.ipv6() {
                Encapsulation::VxlanV6
            } else {
                Encapsulation::Vxlan
            };
            let (parent, _, _) = dp.underlay(underlay).await.unwrap();
            let tunnel = VxlanTunnel {
                requested_by: "pool-vxlan".into(),
                node_addr: underlay,
                vtep_addr: ip(self.vtep),
                vtep_mac: Mac::vtep(self.name, self.ipv6()),
                mtu: dp.tunnel_mtu(underlay, encap).await.unwrap(),
                parent: Some(parent),
            };
            dp.ensure_vxlan(&tunnel).await.unwrap();
            let report = dp.sync(&desired).await.unwrap();
            assert!(report.routes.is_clean(), "{report:?}");
            report
        })
    }
}

fn pair(v6: bool) -> (Node, Node) {
    let (a, b) = if v6 {
        (
            Node::new("vx6a", "fd31::1", "fd65::", "fd65::/122", "fd65::1"),
            Node::new("vx6b", "fd31::2", "fd65::40", "fd65::40/122", "fd65::41"),
        )
    } else {
        (
            Node::new(
                "vxa",
                "172.31.0.1",
                "10.65.0.0",
                "10.65.0.0/26",
                "10.65.0.1",
            ),
            Node::new(
                "vxb",
                "172.31.0.2",
                "10.65.1.0",
                "10.65.1.0/26",
                "10.65.1.1",
            ),
        )
    };
    let len = if v6 { "/64" } else { "/24" };
    veth(
        &a.ns,
        "eth0",
        &[&format!("{}{len}", a.underlay)],
        &b.ns,
        "eth0",
        &[&format!("{}{len}", b.underlay)],
    );
    (a, b)
}

#[test]
fn vxlan_device_fdb_neighbour_and_route() {
    require_tool("bridge");
    let (a, b) = pair(false);
    a.program(&[&b]);

    let link = a.ns.ip_json(&["-d", "link", "show", VXLAN_DEVICE]);
    let link = &link[0];
    let data = &link["linkinfo"]["info_data"];
    assert_eq!(link["linkinfo"]["info_kind"], "vxlan", "{link}");
    assert_eq!(data["id"], 4096, "{link}");
    assert_eq!(data["port"], 4789, "{link}");
    assert_eq!(data["learning"], false, "{link}");
    assert_eq!(data["local"], "172.31.0.1", "{link}");
    assert_eq!(data["link"], "eth0", "{link}");
    assert_eq!(link["mtu"], 1450, "{link}");
    assert_eq!(
        link["address"],
        Mac::vtep("vxa", false).to_string(),
        "{link}"
    );
    assert!(
        link["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{link}"
    );
    let addrs = a.ns.ip_json(&["-4", "addr", "show", "dev", VXLAN_DEVICE]);
    assert_eq!(addrs[0]["addr_info"][0]["local"], "10.65.0.0", "{addrs}");
    assert_eq!(addrs[0]["addr_info"][0]["prefixlen"], 32, "{addrs}");

    let fdb =
        a.ns.exec_ok("bridge", &["-j", "fdb", "show", "dev", VXLAN_DEVICE]);
    let fdb: serde_json::Value = serde_json::from_str(&fdb).unwrap();
    let entry = fdb
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["mac"] == Mac::vtep("vxb", false).to_string())
        .unwrap_or_else(|| panic!("no FDB entry for vxb in {fdb}"));
    assert_eq!(entry["dst"], "172.31.0.2", "{entry}");
    assert_eq!(entry["state"], "permanent", "{entry}");

    let neigh = a.ns.ip_json(&["neigh", "show", "dev", VXLAN_DEVICE]);
    assert_eq!(neigh[0]["dst"], "10.65.1.0", "{neigh}");
    assert_eq!(
        neigh[0]["lladdr"],
        Mac::vtep("vxb", false).to_string(),
        "{neigh}"
    );
    assert_eq!(neigh[0]["state"][0], "PERMANENT", "{neigh}");

    let route = a.ns.ip_json(&["route", "show", "10.65.1.0/26"]);
    assert_eq!(route[0]["gateway"], "10.65.1.0", "{route}");
    assert_eq!(route[0]["dev"], VXLAN_DEVICE, "{route}");
    assert!(
        route[0]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "onlink"),
        "{route}"
    );

    // Node b leaves: its route, FDB and neighbour entries go.
    let report = a.program(&[]);
    assert_eq!(report.routes.deleted, vec![net("10.65.1.0/26")]);
    assert_eq!(report.peers.len(), 1);
    assert_eq!(
        report.peers[0].1.removed_fdb,
        vec![(Mac::vtep("vxb", false), ip("172.31.0.2"))]
    );
    let fdb =
        a.ns.exec_ok("bridge", &["-j", "fdb", "show", "dev", VXLAN_DEVICE]);
    assert!(!fdb.contains(&Mac::vtep("vxb", false).to_string()), "{fdb}");
    assert_eq!(
        a.ns.ip_json(&["neigh", "show", "dev", VXLAN_DEVICE]),
        serde_json::json!([])
    );
    assert_eq!(
        a.ns.ip_json(&["route", "show", "10.65.1.0/26"]),
        serde_json::json!([])
    );
}

#[test]
fn ping_between_pods_across_vxlan() {
    let (a, b) = pair(false);
    a.program(&[&b]);
    b.program(&[&a]);
    assert!(
        ping(&a.ns, Some(a.pod), b.pod, 3),
        "{} could not reach {} over VXLAN",
        a.pod,
        b.pod
    );
    assert!(
        ping(&b.ns, Some(b.pod), a.pod, 3),
        "{} could not reach {} over VXLAN",
        b.pod,
        a.pod
    );
    // The packets really went through the tunnel.
    let stats = a.ns.ip_json(&["-s", "link", "show", a.device()]);
    assert!(
        stats[0]["stats64"]["tx"]["packets"].as_u64().unwrap() >= 3,
        "{stats}"
    );
    // Without b's route, a's pod cannot reach it any more (the block's traffic is
    // not sent anywhere else).
    a.program(&[]);
    assert!(!ping(&a.ns, Some(a.pod), b.pod, 1));
}

#[test]
fn ping_between_pods_across_ipv6_vxlan() {
    let (a, b) = pair(true);
    a.program(&[&b]);
    b.program(&[&a]);
    assert_eq!(a.device(), VXLAN_V6_DEVICE);
    let link = a.ns.ip_json(&["-d", "link", "show", a.device()]);
    assert_eq!(
        link[0]["linkinfo"]["info_data"]["local6"], "fd31::1",
        "{link}"
    );
    assert_eq!(link[0]["mtu"], 1430, "{link}");
    assert!(
        ping(&a.ns, Some(a.pod), b.pod, 3),
        "{} could not reach {} over IPv6 VXLAN",
        a.pod,
        b.pod
    );
    assert!(
        ping(&b.ns, Some(b.pod), a.pod, 3),
        "{} could not reach {} over IPv6 VXLAN",
        b.pod,
        a.pod
    );
}

#[test]
fn ensure_vxlan_is_idempotent_and_recreates_a_wrong_device() {
    let (a, b) = pair(false);
    a.program(&[&b]);
    let index = |ns: &NetNs| {
        ns.ip_json(&["link", "show", VXLAN_DEVICE])[0]["ifindex"]
            .as_u64()
            .unwrap()
    };
    let before = index(&a.ns);
    a.program(&[&b]);
    assert_eq!(
        index(&a.ns),
        before,
        "an unchanged device must not be recreated"
    );

    // A device of the same name with another VNI and learning on is replaced.
    a.ns.ip(&["link", "del", VXLAN_DEVICE]);
    a.ns.ip(&[
        "link",
        "add",
        VXLAN_DEVICE,
        "type",
        "vxlan",
        "id",
        "7",
        "dstport",
        "4789",
        "local",
        "172.31.0.1",
    ]);
    a.program(&[&b]);
    let data = &a.ns.ip_json(&["-d", "link", "show", VXLAN_DEVICE])[0]["linkinfo"]["info_data"];
    assert_eq!(data["id"], 4096);
    assert_eq!(data["learning"], false);
}

#[test]
fn tunnel_mtu_follows_the_underlay() {
    let (a, _b) = pair(false);
    a.ns.ip(&["link", "set", "eth0", "mtu", "9000"]);
    a.ns.run(|| async {
        let dp = Dataplane::connect(RouteConfig::default()).unwrap();
        let (_, name, mtu) = dp.underlay(ip("172.31.0.1")).await.unwrap();
        assert_eq!((name.as_str(), mtu), ("eth0", 9000));
        assert_eq!(
            dp.tunnel_mtu(ip("172.31.0.1"), Encapsulation::Vxlan)
                .await
                .unwrap(),
            8950
        );
        assert_eq!(
            dp.tunnel_mtu(ip("172.31.0.1"), Encapsulation::Ipip)
                .await
                .unwrap(),
            8980
        );
        assert_eq!(
            dp.tunnel_mtu(ip("172.31.0.1"), Encapsulation::None)
                .await
                .unwrap(),
            9000
        );
        let err = dp
            .tunnel_mtu(ip("192.0.2.77"), Encapsulation::Vxlan)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("192.0.2.77"), "{err}");
    });
}
