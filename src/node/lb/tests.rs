use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service as K8sService;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ips(v: &[&str]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = v.iter().map(|s| ip(s)).collect();
    out.sort();
    out
}

fn pool(s: &str) -> PoolName {
    PoolName::new(s).unwrap()
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("default", name)
}

/// LoadBalancer pools: `lb` 198.51.100.0/24, `lb-b` 203.0.113.0/24, `lb6` 2001:db8:lb::/120.
fn pools() -> BTreeMap<PoolName, IpNet> {
    [
        ("lb", "198.51.100.0/24"),
        ("lb-b", "203.0.113.0/24"),
        ("lb6", "2001:db8::/120"),
    ]
    .into_iter()
    .map(|(n, c)| (pool(n), c.parse().unwrap()))
    .collect()
}

fn svc(json: serde_json::Value) -> K8sService {
    serde_json::from_value(json).unwrap()
}

/// A Service of ours asking for nothing: one IPv4 address from the Automatic pools.
fn plain() -> LbService {
    LbService {
        requested_ips: vec![],
        v4_pools: vec![],
        v6_pools: vec![],
        v4: true,
        v6: false,
        status_ips: vec![],
    }
}

#[test]
fn which_services_are_ours_and_what_they_ask_for() {
    use serde_json::json;
    let lb = |spec: serde_json::Value, ann: serde_json::Value| {
        svc(
            json!({"metadata": {"name": "web", "namespace": "default", "annotations": ann},
                   "spec": spec}),
        )
    };
    type Want = Option<Result<LbService, &'static str>>;
    // (what, Service, want)
    let cases: Vec<(&str, K8sService, Want)> = vec![
        (
            "ClusterIP: not ours",
            lb(json!({"type": "ClusterIP"}), json!({})),
            None,
        ),
        (
            "NodePort: not ours",
            lb(json!({"type": "NodePort"}), json!({})),
            None,
        ),
        (
            "another class: not ours",
            lb(
                json!({"type": "LoadBalancer", "loadBalancerClass": "metallb.io/x"}),
                json!({}),
            ),
            None,
        ),
        (
            "no class: ours",
            lb(json!({"type": "LoadBalancer"}), json!({})),
            Some(Ok(plain())),
        ),
        (
            "serval's class: ours",
            lb(
                json!({"type": "LoadBalancer", "loadBalancerClass": "serval.dev/lb"}),
                json!({}),
            ),
            Some(Ok(plain())),
        ),
        (
            "dual-stack",
            lb(
                json!({"type": "LoadBalancer", "ipFamilies": ["IPv6", "IPv4"], "ipFamilyPolicy": "RequireDualStack"}),
                json!({}),
            ),
            Some(Ok(LbService {
                v6: true,
                ..plain()
            })),
        ),
        (
            "IPv6 only",
            lb(
                json!({"type": "LoadBalancer", "ipFamilies": ["IPv6"]}),
                json!({}),
            ),
            Some(Ok(LbService {
                v4: false,
                v6: true,
                ..plain()
            })),
        ),
        (
            "Calico's address annotation",
            lb(
                json!({"type": "LoadBalancer"}),
                json!({"projectcalico.org/loadBalancerIPs": "[\"198.51.100.7\", \"2001:db8::7\"]"}),
            ),
            Some(Ok(LbService {
                requested_ips: ips(&["198.51.100.7", "2001:db8::7"]),
                ..plain()
            })),
        ),
        (
            "serval's annotation wins over Calico's",
            lb(
                json!({"type": "LoadBalancer"}),
                json!({"projectcalico.org/loadBalancerIPs": "[\"198.51.100.7\"]", "serval.dev/loadBalancerIPs": "[\"198.51.100.8\"]"}),
            ),
            Some(Ok(LbService {
                requested_ips: ips(&["198.51.100.8"]),
                ..plain()
            })),
        ),
        (
            "the annotation wins over spec.loadBalancerIP",
            lb(
                json!({"type": "LoadBalancer", "loadBalancerIP": "198.51.100.9"}),
                json!({"serval.dev/loadBalancerIPs": "[\"198.51.100.8\"]"}),
            ),
            Some(Ok(LbService {
                requested_ips: ips(&["198.51.100.8"]),
                ..plain()
            })),
        ),
        (
            "spec.loadBalancerIP",
            lb(
                json!({"type": "LoadBalancer", "loadBalancerIP": "198.51.100.9"}),
                json!({}),
            ),
            Some(Ok(LbService {
                requested_ips: ips(&["198.51.100.9"]),
                ..plain()
            })),
        ),
        (
            "pools by name",
            lb(
                json!({"type": "LoadBalancer", "ipFamilies": ["IPv4", "IPv6"]}),
                json!({"projectcalico.org/ipv4pools": "[\"lb-b\"]", "serval.dev/ipv6pools": "[\"lb6\"]"}),
            ),
            Some(Ok(LbService {
                v4_pools: vec![pool("lb-b")],
                v6_pools: vec![pool("lb6")],
                v6: true,
                ..plain()
            })),
        ),
        (
            "the status is read",
            svc(
                json!({"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer"},
                       "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.3"}, {"hostname": "x"}]}}}),
            ),
            Some(Ok(LbService {
                status_ips: ips(&["198.51.100.3"]),
                ..plain()
            })),
        ),
        (
            "not JSON",
            lb(
                json!({"type": "LoadBalancer"}),
                json!({"serval.dev/loadBalancerIPs": "198.51.100.7"}),
            ),
            Some(Err("annotation serval.dev/loadBalancerIPs")),
        ),
        (
            "not an address",
            lb(
                json!({"type": "LoadBalancer"}),
                json!({"serval.dev/loadBalancerIPs": "[\"web\"]"}),
            ),
            Some(Err("\"web\" is not an IP address")),
        ),
        (
            "two of one family",
            lb(
                json!({"type": "LoadBalancer"}),
                json!({"serval.dev/loadBalancerIPs": "[\"198.51.100.7\", \"198.51.100.8\"]"}),
            ),
            Some(Err("more than one IPv4 address")),
        ),
        (
            "a bad pool name",
            lb(
                json!({"type": "LoadBalancer"}),
                json!({"serval.dev/ipv4pools": "[\"Not_A_Name\"]"}),
            ),
            Some(Err("serval.dev/ipv4pools")),
        ),
    ];
    for (what, s, want) in cases {
        match (LbService::from_k8s(&s), want) {
            (None, None) => {}
            (Some(Ok(got)), Some(Ok(want))) => assert_eq!(got, want, "{what}"),
            (Some(Err(e)), Some(Err(frag))) => assert!(e.contains(frag), "{what}: {e}"),
            (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn plan_table() {
    use AssignIps::*;
    let auto = |v4: bool, v6: bool| Want::Auto {
        v4,
        v6,
        v4_pools: vec![],
        v6_pools: vec![],
    };
    let requested = LbService {
        requested_ips: ips(&["198.51.100.7"]),
        ..plain()
    };
    let in_b = LbService {
        v4_pools: vec![pool("lb-b")],
        ..plain()
    };
    let dual = LbService {
        v6: true,
        ..plain()
    };
    let shown = |s: LbService, v: &[&str]| LbService {
        status_ips: ips(v),
        ..s
    };
    type Case = (
        &'static str,
        AssignIps,
        Vec<(&'static str, Result<LbService, String>)>,
        Vec<(&'static str, &'static [&'static str])>,
        Vec<Action>,
    );
    // (what, setting, Services of ours, allocations, actions)
    let cases: Vec<Case> = vec![
        ("nothing", AllServices, vec![], vec![], vec![]),
        (
            "a new Service: allocate",
            AllServices,
            vec![("web", Ok(plain()))],
            vec![],
            vec![Action::Allocate(key("web"), auto(true, false))],
        ),
        (
            "allocated, status not written yet",
            AllServices,
            vec![("web", Ok(plain()))],
            vec![("web", &["198.51.100.0"])],
            vec![Action::Status(key("web"), ips(&["198.51.100.0"]))],
        ),
        (
            "allocated and shown: nothing to do",
            AllServices,
            vec![("web", Ok(shown(plain(), &["198.51.100.0"])))],
            vec![("web", &["198.51.100.0"])],
            vec![],
        ),
        (
            "a status someone else wrote is corrected",
            AllServices,
            vec![("web", Ok(shown(plain(), &["192.0.2.1"])))],
            vec![("web", &["198.51.100.0"])],
            vec![Action::Status(key("web"), ips(&["198.51.100.0"]))],
        ),
        (
            "Service gone (or type or class changed): release",
            AllServices,
            vec![],
            vec![("web", &["198.51.100.0"])],
            vec![Action::Release(key("web"))],
        ),
        (
            "a requested address",
            AllServices,
            vec![("web", Ok(requested.clone()))],
            vec![],
            vec![Action::Allocate(
                key("web"),
                Want::Addresses(ips(&["198.51.100.7"])),
            )],
        ),
        (
            "the requested address changed: release, allocate",
            AllServices,
            vec![("web", Ok(requested.clone()))],
            vec![("web", &["198.51.100.0"])],
            vec![
                Action::Release(key("web")),
                Action::Allocate(key("web"), Want::Addresses(ips(&["198.51.100.7"]))),
            ],
        ),
        (
            "the request dropped: the held address still fits",
            AllServices,
            vec![("web", Ok(shown(plain(), &["198.51.100.7"])))],
            vec![("web", &["198.51.100.7"])],
            vec![],
        ),
        (
            "a named pool it is in",
            AllServices,
            vec![("web", Ok(shown(in_b.clone(), &["203.0.113.0"])))],
            vec![("web", &["203.0.113.0"])],
            vec![],
        ),
        (
            "a named pool it is not in: release, allocate",
            AllServices,
            vec![("web", Ok(in_b.clone()))],
            vec![("web", &["198.51.100.0"])],
            vec![
                Action::Release(key("web")),
                Action::Allocate(key("web"), in_b.want()),
            ],
        ),
        (
            "became dual-stack: top up",
            AllServices,
            vec![("web", Ok(dual.clone()))],
            vec![("web", &["198.51.100.0"])],
            vec![Action::Allocate(key("web"), auto(true, true))],
        ),
        (
            "dual-stack, both held",
            AllServices,
            vec![("web", Ok(dual.clone()))],
            vec![("web", &["198.51.100.0", "2001:db8::"])],
            vec![Action::Status(
                key("web"),
                ips(&["198.51.100.0", "2001:db8::"]),
            )],
        ),
        (
            "back to single-stack: release, allocate",
            AllServices,
            vec![("web", Ok(plain()))],
            vec![("web", &["198.51.100.0", "2001:db8::"])],
            vec![
                Action::Release(key("web")),
                Action::Allocate(key("web"), auto(true, false)),
            ],
        ),
        (
            "RequestedServicesOnly: a Service that asks for nothing gets nothing",
            RequestedServicesOnly,
            vec![("web", Ok(plain())), ("db", Ok(requested.clone()))],
            vec![],
            vec![Action::Allocate(
                key("db"),
                Want::Addresses(ips(&["198.51.100.7"])),
            )],
        ),
        (
            "RequestedServicesOnly: one that stopped asking loses its address",
            RequestedServicesOnly,
            vec![("web", Ok(plain()))],
            vec![("web", &["198.51.100.0"])],
            vec![Action::Release(key("web"))],
        ),
        (
            "an unreadable request: reported, the address kept",
            AllServices,
            vec![(
                "web",
                Err("annotation serval.dev/loadBalancerIPs: bad".into()),
            )],
            vec![("web", &["198.51.100.0"])],
            vec![Action::Problem(
                key("web"),
                "annotation serval.dev/loadBalancerIPs: bad".into(),
            )],
        ),
        (
            "a requested address outside the LoadBalancer pools: reported, never allocated",
            AllServices,
            vec![(
                "web",
                Ok(LbService {
                    requested_ips: ips(&["10.0.0.5"]),
                    ..plain()
                }),
            )],
            vec![],
            vec![Action::Problem(
                key("web"),
                "10.0.0.5 is in no LoadBalancer IPPool".into(),
            )],
        ),
        (
            "each Service on its own",
            AllServices,
            vec![
                ("a", Ok(shown(plain(), &["198.51.100.0"]))),
                ("b", Ok(plain())),
            ],
            vec![("a", &["198.51.100.0"]), ("gone", &["198.51.100.1"])],
            vec![
                Action::Release(key("gone")),
                Action::Allocate(key("b"), auto(true, false)),
            ],
        ),
    ];
    let pools = pools();
    for (what, mode, services, allocs, want) in cases {
        let services = services.into_iter().map(|(n, s)| (key(n), s)).collect();
        let allocs = allocs.into_iter().map(|(n, a)| (key(n), ips(a))).collect();
        assert_eq!(plan(&services, &allocs, &pools, mode), want, "{what}");
    }
}

#[test]
fn handles_name_one_service() {
    let k = ObjectKey::new("shop", "web");
    let h = handle_of(&k).unwrap();
    assert_eq!(h.as_str(), "serval-lb.shop.web");
    assert_eq!(key_of(&h), Some(k));
    for other in [
        "k8s-pod-network.abc.eth0",
        "serval-lb.x",
        "serval-lb.a.b.c",
        "ipip-tunnel-addr-n1",
    ] {
        assert_eq!(key_of(&HandleId::new(other).unwrap()), None, "{other}");
    }
}
