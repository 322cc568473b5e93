//! IP-in-IP. The host kernel here has no ipip module, so the tunnel tests are
//! `#[ignore]`d and run inside a User-Mode Linux kernel that has it, through
//! the project's User-Mode Linux runner (`integration/uml/run`), by `ipip_tests_pass_inside_uml`. On the
//! host, `ipip_absence_is_a_clear_error` checks the error a node without ipip gets.

mod dataplane_support;

use std::net::{IpAddr, Ipv4Addr};

use dataplane_support::{ping, veth, NetNs};
use ipnet::IpNet;
use serval::node::dataplane::{
    Dataplane, DesiredRoutes, Encapsulation, Error, IpipTunnel, RouteConfig, RouteTarget,
    IPIP_DEVICE,
};
use serval_integration::uml::Uml;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// One node: namespace, underlay address, tunnel address, block, pod address on `lo`.
struct Node {
    ns: NetNs,
    underlay: Ipv4Addr,
    tunnel: Ipv4Addr,
    block: &'static str,
    pod: &'static str,
}

impl Node {
    fn new(
        tag: &str,
        underlay: &str,
        tunnel: &str,
        block: &'static str,
        pod: &'static str,
    ) -> Node {
        let ns = NetNs::new(tag);
        ns.sysctl("net.ipv4.conf.all.rp_filter", "0");
        ns.sysctl("net.ipv4.conf.default.rp_filter", "0");
        ns.ip(&["addr", "add", &format!("{pod}/32"), "dev", "lo"]);
        Node {
            ns,
            underlay: underlay.parse().unwrap(),
            tunnel: tunnel.parse().unwrap(),
            block,
            pod,
        }
    }

    fn program(&self, remotes: &[&Node]) {
        let mut desired = DesiredRoutes::default();
        desired
            .routes
            .insert(net(self.block), RouteTarget::Blackhole);
        for remote in remotes {
            desired
                .routes
                .insert(net(remote.block), RouteTarget::ipip(remote.underlay));
        }
        self.ns.run(|| async {
            let mut dp = Dataplane::connect(RouteConfig::default()).unwrap();
            let mtu = dp
                .tunnel_mtu(IpAddr::V4(self.underlay), Encapsulation::Ipip)
                .await
                .unwrap();
            let tunnel = IpipTunnel {
                requested_by: "pool-ipip".into(),
                address: Some(self.tunnel),
                mtu,
            };
            dp.ensure_ipip(&tunnel).await.unwrap();
            let report = dp.sync(&desired).await.unwrap();
            assert!(report.routes.is_clean(), "{report:?}");
        });
    }
}

// Runs inside the UML kernel (ipip available): see `ipip_tests_pass_inside_uml`.
#[test]
#[ignore = "needs a kernel with ipip: runs inside User-Mode Linux via ipip_tests_pass_inside_uml"]
fn ipip_tunnel_carries_pod_traffic() {
    let a = Node::new(
        "ipa",
        "172.30.0.1",
        "10.66.0.0",
        "10.66.0.0/26",
        "10.66.0.1",
    );
    let b = Node::new(
        "ipb",
        "172.30.0.2",
        "10.66.1.0",
        "10.66.1.0/26",
        "10.66.1.1",
    );
    veth(
        &a.ns,
        "eth0",
        &["172.30.0.1/24"],
        &b.ns,
        "eth0",
        &["172.30.0.2/24"],
    );
    a.program(&[&b]);
    b.program(&[&a]);

    let link = &a.ns.ip_json(&["-d", "link", "show", IPIP_DEVICE])[0];
    assert_eq!(link["mtu"], 1480, "{link}");
    assert!(
        link["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{link}"
    );
    let addrs = a.ns.ip_json(&["-4", "addr", "show", "dev", IPIP_DEVICE]);
    assert_eq!(addrs[0]["addr_info"][0]["local"], "10.66.0.0", "{addrs}");
    let route = a.ns.ip_json(&["route", "show", "10.66.1.0/26"]);
    assert_eq!(route[0]["gateway"], "172.30.0.2", "{route}");
    assert_eq!(route[0]["dev"], IPIP_DEVICE, "{route}");
    assert!(
        route[0]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "onlink"),
        "{route}"
    );

    assert!(
        ping(&a.ns, Some(a.pod), b.pod, 3),
        "{} could not reach {} over IP-in-IP",
        a.pod,
        b.pod
    );
    assert!(
        ping(&b.ns, Some(b.pod), a.pod, 3),
        "{} could not reach {} over IP-in-IP",
        b.pod,
        a.pod
    );
    let stats = a.ns.ip_json(&["-s", "link", "show", IPIP_DEVICE]);
    assert!(
        stats[0]["stats64"]["tx"]["packets"].as_u64().unwrap() >= 3,
        "{stats}"
    );

    // A second run changes nothing and keeps a single tunnel address.
    a.program(&[&b]);
    let addrs = a.ns.ip_json(&["-4", "addr", "show", "dev", IPIP_DEVICE]);
    assert_eq!(
        addrs[0]["addr_info"].as_array().unwrap().len(),
        1,
        "{addrs}"
    );
    assert!(ping(&a.ns, Some(a.pod), b.pod, 1));
}

// Runs inside the UML kernel (ipip available): see `ipip_tests_pass_inside_uml`.
#[test]
#[ignore = "needs a kernel with ipip: runs inside User-Mode Linux via ipip_tests_pass_inside_uml"]
fn ipip_tunnel_address_change_replaces_the_old_one() {
    let a = Node::new(
        "ipc",
        "172.30.1.1",
        "10.67.0.0",
        "10.67.0.0/26",
        "10.67.0.1",
    );
    veth(&a.ns, "eth0", &["172.30.1.1/24"], &a.ns, "peer0", &[]);
    a.program(&[]);
    let a2 = Node {
        tunnel: "10.67.0.9".parse().unwrap(),
        ..a
    };
    a2.program(&[]);
    let addrs = a2.ns.ip_json(&["-4", "addr", "show", "dev", IPIP_DEVICE]);
    let locals: Vec<_> = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["local"].clone())
        .collect();
    assert_eq!(locals, vec![serde_json::json!("10.67.0.9")], "{addrs}");
}

const UML_TESTS: [&str; 2] = [
    "ipip_tunnel_carries_pod_traffic",
    "ipip_tunnel_address_change_replaces_the_old_one",
];

#[test]
fn ipip_tests_pass_inside_uml() {
    let uml = Uml::new().unwrap_or_else(|e| panic!("{e}"));
    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_string_lossy();
    for test in UML_TESTS {
        let run = uml
            .run(&[
                &exe,
                "--ignored",
                "--exact",
                test,
                "--test-threads",
                "1",
                "--color",
                "never",
            ])
            .unwrap_or_else(|e| panic!("{test}: {e}"));
        assert!(
            run.success() && run.output.contains("test result: ok. 1 passed"),
            "{test} inside UML (status {}):\n{}",
            run.status,
            run.output
        );
    }
}

/// On a kernel without ipip the error says so and names the pool; on one with it,
/// the tunnel comes up.
#[test]
fn ipip_absence_is_a_clear_error() {
    let ns = NetNs::new("noipip");
    let result = ns.run(|| async {
        let dp = Dataplane::connect(RouteConfig::default()).unwrap();
        let tunnel = IpipTunnel {
            requested_by: "pool-east".into(),
            address: None,
            mtu: 1480,
        };
        dp.ensure_ipip(&tunnel).await
    });
    let kernel_has_ipip = std::path::Path::new("/sys/module/ipip").exists();
    match result {
        Err(e @ Error::IpipUnsupported { .. }) => {
            assert!(!kernel_has_ipip, "ipip is loaded, yet: {e}");
            let text = e.to_string();
            assert!(text.contains("no IP-in-IP (ipip) support"), "{text}");
            assert!(text.contains("pool-east"), "{text}");
            assert!(text.contains("tunl0"), "{text}");
            println!("{text}");
        }
        Err(other) => panic!("expected IpipUnsupported, got: {other}"),
        Ok(_) => assert!(kernel_has_ipip, "tunl0 came up without the ipip module"),
    }
}
