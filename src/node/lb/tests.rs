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
    }
}

fn name(s: &str) -> PoolRef {
    PoolRef::Name(pool(s))
}

fn cidr(s: &str) -> PoolRef {
    PoolRef::Cidr(s.parse().unwrap())
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
                v4_pools: vec![name("lb-b")],
                v6_pools: vec![name("lb6")],
                v6: true,
                ..plain()
            })),
        ),
        (
            "pools by CIDR, as Calico takes them (the host bits dropped)",
            lb(
                json!({"type": "LoadBalancer", "ipFamilies": ["IPv4", "IPv6"]}),
                json!({"projectcalico.org/ipv4pools": "[\"203.0.113.0/24\", \"lb\"]", "projectcalico.org/ipv6pools": "[\"2001:db8::1/120\"]"}),
            ),
            Some(Ok(LbService {
                v4_pools: vec![cidr("203.0.113.0/24"), name("lb")],
                v6_pools: vec![cidr("2001:db8::/120")],
                v6: true,
                ..plain()
            })),
        ),
        (
            "an IPv6 CIDR among the IPv4 pools",
            lb(
                json!({"type": "LoadBalancer"}),
                json!({"projectcalico.org/ipv4pools": "[\"2001:db8::/120\"]"}),
            ),
            Some(Err(
                "projectcalico.org/ipv4pools: 2001:db8::/120 is not an IPv4 CIDR",
            )),
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
fn what_is_seen_of_a_service() {
    use serde_json::json;
    let s = svc(json!({
        "metadata": {"name": "web", "uid": "0b1c"},
        "spec": {"type": "LoadBalancer"},
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.3"}, {"hostname": "x"}]}}
    }));
    let seen = Seen::from_k8s(&s);
    assert_eq!(
        seen,
        Seen {
            uid: "0b1c".into(),
            status_ips: ips(&["198.51.100.3"]),
            ours: Some(Ok(plain())),
        }
    );
    assert!(seen.relevant());
    // No longer ours but still showing an address: kept, to take it out of the status.
    let s = svc(json!({
        "metadata": {"name": "web", "uid": "0b1c"},
        "spec": {"type": "ClusterIP"},
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.3"}]}}
    }));
    assert!(Seen::from_k8s(&s).relevant());
    let s = svc(json!({"metadata": {"name": "db"}, "spec": {"type": "ClusterIP"}}));
    assert!(!Seen::from_k8s(&s).relevant());
}

/// A Service of ours with UID `u1`, showing `status` in its status.
fn ours(s: LbService, status: &[&str]) -> Seen {
    Seen {
        uid: "u1".into(),
        status_ips: ips(status),
        ours: Some(Ok(s)),
    }
}

fn owner(name: &str, uid: &str) -> Owner {
    Owner::new(key(name), uid)
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
        v4_pools: vec![name("lb-b")],
        ..plain()
    };
    let in_b_by_cidr = LbService {
        v4_pools: vec![cidr("203.0.113.0/24")],
        ..plain()
    };
    let dual = LbService {
        v6: true,
        ..plain()
    };
    let want_b = Want::Auto {
        v4: true,
        v6: false,
        v4_pools: vec![pool("lb-b")],
        v6_pools: vec![],
    };
    type Case = (
        &'static str,
        AssignIps,
        Vec<(&'static str, Seen)>,
        Vec<(&'static str, &'static str, &'static [&'static str])>,
        Vec<Action>,
    );
    // (what, setting, Services seen, allocations (name, uid, addresses), actions)
    let cases: Vec<Case> = vec![
        ("nothing", AllServices, vec![], vec![], vec![]),
        (
            "a new Service: allocate under its UID",
            AllServices,
            vec![("web", ours(plain(), &[]))],
            vec![],
            vec![Action::Allocate(owner("web", "u1"), auto(true, false))],
        ),
        (
            "allocated, status not written yet",
            AllServices,
            vec![("web", ours(plain(), &[]))],
            vec![("web", "u1", &["198.51.100.0"])],
            vec![Action::Status(key("web"), ips(&["198.51.100.0"]))],
        ),
        (
            "allocated and shown: nothing to do",
            AllServices,
            vec![("web", ours(plain(), &["198.51.100.0"]))],
            vec![("web", "u1", &["198.51.100.0"])],
            vec![],
        ),
        (
            "a status someone else wrote is corrected",
            AllServices,
            vec![("web", ours(plain(), &["192.0.2.1"]))],
            vec![("web", "u1", &["198.51.100.0"])],
            vec![Action::Status(key("web"), ips(&["198.51.100.0"]))],
        ),
        (
            "Service gone: release",
            AllServices,
            vec![],
            vec![("web", "u1", &["198.51.100.0"])],
            vec![Action::Release(owner("web", "u1"))],
        ),
        (
            "deleted and created again under the name: the old UID's address released, a new one allocated",
            AllServices,
            vec![(
                "web",
                Seen {
                    uid: "u2".into(),
                    ..ours(plain(), &[])
                },
            )],
            vec![("web", "u1", &["198.51.100.0"])],
            vec![
                Action::Release(owner("web", "u1")),
                Action::Allocate(owner("web", "u2"), auto(true, false)),
            ],
        ),
        (
            "recreated asking for the old address: released first, then given to the new one",
            AllServices,
            vec![(
                "web",
                Seen {
                    uid: "u2".into(),
                    ..ours(requested.clone(), &[])
                },
            )],
            vec![("web", "u1", &["198.51.100.7"])],
            vec![
                Action::Release(owner("web", "u1")),
                Action::Allocate(
                    owner("web", "u2"),
                    Want::Addresses(ips(&["198.51.100.7"])),
                ),
            ],
        ),
        (
            "a handle without a UID (written before serval recorded it), its address in the Service's status: carried over to the UID's handle, same address",
            AllServices,
            vec![("web", ours(plain(), &["198.51.100.0"]))],
            vec![("web", "", &["198.51.100.0"])],
            vec![
                Action::Release(owner("web", "")),
                Action::Allocate(
                    owner("web", "u1"),
                    Want::Addresses(ips(&["198.51.100.0"])),
                ),
            ],
        ),
        (
            "a handle without a UID, carried over, then topped up (the Service now wants IPv6 too)",
            AllServices,
            vec![("web", ours(dual.clone(), &["198.51.100.0"]))],
            vec![("web", "", &["198.51.100.0"])],
            vec![
                Action::Release(owner("web", "")),
                Action::Allocate(
                    owner("web", "u1"),
                    Want::Addresses(ips(&["198.51.100.0"])),
                ),
                Action::Allocate(owner("web", "u1"), auto(true, true)),
            ],
        ),
        (
            "a handle without a UID whose address the Service's status does not show: released, allocated anew",
            AllServices,
            vec![("web", ours(plain(), &[]))],
            vec![("web", "", &["198.51.100.0"])],
            vec![
                Action::Release(owner("web", "")),
                Action::Allocate(owner("web", "u1"), auto(true, false)),
            ],
        ),
        (
            "a handle without a UID for a Service no longer served: released",
            AllServices,
            vec![(
                "web",
                Seen {
                    uid: "u1".into(),
                    status_ips: ips(&["198.51.100.0"]),
                    ours: None,
                },
            )],
            vec![("web", "", &["198.51.100.0"])],
            vec![
                Action::Status(key("web"), vec![]),
                Action::Release(owner("web", "")),
            ],
        ),
        (
            "type changed (no longer ours): serval's address out of the status, then released",
            AllServices,
            vec![(
                "web",
                Seen {
                    uid: "u1".into(),
                    status_ips: ips(&["198.51.100.0", "192.0.2.9"]),
                    ours: None,
                },
            )],
            vec![("web", "u1", &["198.51.100.0"])],
            vec![
                Action::Status(key("web"), ips(&["192.0.2.9"])),
                Action::Release(owner("web", "u1")),
            ],
        ),
        (
            "no longer ours and its status already clear: released",
            AllServices,
            vec![(
                "web",
                Seen {
                    uid: "u1".into(),
                    status_ips: ips(&["192.0.2.9"]),
                    ours: None,
                },
            )],
            vec![("web", "u1", &["198.51.100.0"])],
            vec![Action::Release(owner("web", "u1"))],
        ),
        (
            "another controller's status on a Service not ours: left alone",
            AllServices,
            vec![(
                "web",
                Seen {
                    uid: "u1".into(),
                    status_ips: ips(&["192.0.2.9"]),
                    ours: None,
                },
            )],
            vec![],
            vec![],
        ),
        (
            "a requested address",
            AllServices,
            vec![("web", ours(requested.clone(), &[]))],
            vec![],
            vec![Action::Allocate(
                owner("web", "u1"),
                Want::Addresses(ips(&["198.51.100.7"])),
            )],
        ),
        (
            "the requested address changed: release, allocate",
            AllServices,
            vec![("web", ours(requested.clone(), &["198.51.100.0"]))],
            vec![("web", "u1", &["198.51.100.0"])],
            vec![
                Action::Release(owner("web", "u1")),
                Action::Allocate(
                    owner("web", "u1"),
                    Want::Addresses(ips(&["198.51.100.7"])),
                ),
            ],
        ),
        (
            "the request dropped: the held address still fits",
            AllServices,
            vec![("web", ours(plain(), &["198.51.100.7"]))],
            vec![("web", "u1", &["198.51.100.7"])],
            vec![],
        ),
        (
            "a named pool it is in",
            AllServices,
            vec![("web", ours(in_b.clone(), &["203.0.113.0"]))],
            vec![("web", "u1", &["203.0.113.0"])],
            vec![],
        ),
        (
            "a named pool it is not in: release, allocate",
            AllServices,
            vec![("web", ours(in_b.clone(), &[]))],
            vec![("web", "u1", &["198.51.100.0"])],
            vec![
                Action::Release(owner("web", "u1")),
                Action::Allocate(owner("web", "u1"), want_b.clone()),
            ],
        ),
        (
            "a pool named by its CIDR is the pool of that CIDR",
            AllServices,
            vec![("web", ours(in_b_by_cidr.clone(), &[]))],
            vec![],
            vec![Action::Allocate(owner("web", "u1"), want_b.clone())],
        ),
        (
            "a CIDR that is no LoadBalancer pool's: reported, the address kept",
            AllServices,
            vec![(
                "web",
                ours(
                    LbService {
                        v4_pools: vec![cidr("203.0.113.0/25")],
                        ..plain()
                    },
                    &["198.51.100.0"],
                ),
            )],
            vec![("web", "u1", &["198.51.100.0"])],
            vec![Action::Problem(
                key("web"),
                "no LoadBalancer IPPool has the CIDR 203.0.113.0/25".into(),
            )],
        ),
        (
            "became dual-stack: top up",
            AllServices,
            vec![("web", ours(dual.clone(), &[]))],
            vec![("web", "u1", &["198.51.100.0"])],
            vec![Action::Allocate(owner("web", "u1"), auto(true, true))],
        ),
        (
            "dual-stack, both held",
            AllServices,
            vec![("web", ours(dual.clone(), &[]))],
            vec![("web", "u1", &["198.51.100.0", "2001:db8::"])],
            vec![Action::Status(
                key("web"),
                ips(&["198.51.100.0", "2001:db8::"]),
            )],
        ),
        (
            "back to single-stack: release, allocate",
            AllServices,
            vec![("web", ours(plain(), &[]))],
            vec![("web", "u1", &["198.51.100.0", "2001:db8::"])],
            vec![
                Action::Release(owner("web", "u1")),
                Action::Allocate(owner("web", "u1"), auto(true, false)),
            ],
        ),
        (
            "RequestedServicesOnly: a Service that asks for nothing gets nothing",
            RequestedServicesOnly,
            vec![("web", ours(plain(), &[])), ("db", ours(requested.clone(), &[]))],
            vec![],
            vec![Action::Allocate(
                owner("db", "u1"),
                Want::Addresses(ips(&["198.51.100.7"])),
            )],
        ),
        (
            "RequestedServicesOnly: one that stopped asking loses its address, status first",
            RequestedServicesOnly,
            vec![("web", ours(plain(), &["198.51.100.0"]))],
            vec![("web", "u1", &["198.51.100.0"])],
            vec![
                Action::Status(key("web"), vec![]),
                Action::Release(owner("web", "u1")),
            ],
        ),
        (
            "an unreadable request: reported, the address kept",
            AllServices,
            vec![(
                "web",
                Seen {
                    uid: "u1".into(),
                    status_ips: vec![],
                    ours: Some(Err("annotation serval.dev/loadBalancerIPs: bad".into())),
                },
            )],
            vec![("web", "u1", &["198.51.100.0"])],
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
                ours(
                    LbService {
                        requested_ips: ips(&["10.0.0.5"]),
                        ..plain()
                    },
                    &[],
                ),
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
                ("a", ours(plain(), &["198.51.100.0"])),
                ("b", ours(plain(), &[])),
            ],
            vec![
                ("a", "u1", &["198.51.100.0"]),
                ("gone", "u1", &["198.51.100.1"]),
            ],
            vec![
                Action::Release(owner("gone", "u1")),
                Action::Allocate(owner("b", "u1"), auto(true, false)),
            ],
        ),
    ];
    let pools = pools();
    for (what, mode, services, allocs, want) in cases {
        let services = services.into_iter().map(|(n, s)| (key(n), s)).collect();
        let allocs = allocs
            .into_iter()
            .map(|(n, u, a)| (owner(n, u), ips(a)))
            .collect();
        assert_eq!(plan(&services, &allocs, &pools, mode), want, "{what}");
    }
}

#[test]
fn without_load_balancer_pools_nothing_is_given_or_reported() {
    let services = [
        (key("web"), ours(plain(), &[])),
        (
            key("bad"),
            Seen {
                uid: "u1".into(),
                status_ips: vec![],
                ours: Some(Err("annotation serval.dev/loadBalancerIPs: bad".into())),
            },
        ),
    ]
    .into_iter()
    .collect();
    let gone = [(owner("gone", "u1"), ips(&["198.51.100.1"]))]
        .into_iter()
        .collect();
    assert_eq!(
        plan(&services, &gone, &BTreeMap::new(), AssignIps::AllServices),
        vec![Action::Release(owner("gone", "u1"))],
        "what the IPAM holds for a deleted Service still goes"
    );
}

#[test]
fn handles_name_one_service_object() {
    let o = Owner::new(
        ObjectKey::new("shop", "web"),
        "5b0d3c1e-7a52-4c55-9b1e-2f0c4f3a9d11",
    );
    let h = o.handle().unwrap();
    assert_eq!(
        h.as_str(),
        "serval-lb.shop.web.5b0d3c1e-7a52-4c55-9b1e-2f0c4f3a9d11"
    );
    assert_eq!(Owner::of_handle(&h), Some(o));
    // Written before the UID was recorded: no UID, so it matches no Service.
    assert_eq!(
        Owner::of_handle(&HandleId::new("serval-lb.shop.web").unwrap()),
        Some(Owner::new(ObjectKey::new("shop", "web"), ""))
    );
    for other in [
        "k8s-pod-network.abc.eth0",
        "serval-lb.x",
        "serval-lb.a.b.c.d",
        "ipip-tunnel-addr-n1",
    ] {
        assert_eq!(
            Owner::of_handle(&HandleId::new(other).unwrap()),
            None,
            "{other}"
        );
    }
}
